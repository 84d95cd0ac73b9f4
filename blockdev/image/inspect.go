package image

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/token"
	"kmsagent/blockdev/volume"
)

// Info summarises an image's header. It holds no key material: not the
// wrapped key (only its length), no salts, no digests, and of tokens of
// other types only their type and keyslots, since those may carry
// secrets of their own.
type Info struct {
	Version      int           `json:"version"`
	UUID         string        `json:"uuid"`
	Label        string        `json:"label"`
	Subsystem    string        `json:"subsystem"`
	SeqID        uint64        `json:"seqid"`
	MetadataSize uint64        `json:"metadata_size"`
	KeyslotsSize uint64        `json:"keyslots_size"`
	Flags        []string      `json:"flags"`
	Requirements []string      `json:"requirements"`
	Segment      SegmentInfo   `json:"segment"`
	Keyslots     []KeyslotInfo `json:"keyslots"`
	Tokens       []TokenInfo   `json:"tokens"`
	Warnings     []string      `json:"warnings"`
}

// SegmentInfo is the data segment and what the file holds of it.
type SegmentInfo struct {
	Offset      uint64 `json:"offset"`
	Size        string `json:"size"` // bytes, or "dynamic"
	Cipher      string `json:"cipher"`
	KeyBits     int    `json:"key_bits"`
	SectorSize  int    `json:"sector_size"`
	IVTweak     uint64 `json:"iv_tweak"`
	Integrity   string `json:"integrity,omitempty"`
	PayloadSize int64  `json:"payload_size"`         // whole sectors present in the file
	ImageSize   *int64 `json:"image_size,omitempty"` // raw size decrypt gives, when recorded
}

// KeyslotInfo is one keyslot.
type KeyslotInfo struct {
	ID       int     `json:"id"`
	Type     string  `json:"type"`
	KeyBits  int     `json:"key_bits"`
	Priority string  `json:"priority"`
	KDF      KDFInfo `json:"kdf"`
	Cipher   string  `json:"area_cipher"`
	Tokens   []int   `json:"tokens"` // tokens that name this keyslot

	// Unbound keyslots (cryptsetup luksAddKey --unbound) hold a key that
	// is not the volume key; they do not open the volume.
	Unbound bool `json:"unbound"`
}

// KDFInfo is a keyslot's key derivation.
type KDFInfo struct {
	Type       string `json:"type"`
	Hash       string `json:"hash,omitempty"`
	Iterations uint32 `json:"iterations,omitempty"`
	Time       uint32 `json:"time,omitempty"`
	MemoryKiB  uint32 `json:"memory_kib,omitempty"`
	CPUs       uint32 `json:"cpus,omitempty"`
}

// TokenInfo is one token.
type TokenInfo struct {
	ID       int    `json:"id"`
	Type     string `json:"type"`
	Keyslots []int  `json:"keyslots"`
	// kmsagent tokens:
	Provider       string `json:"kms_provider,omitempty"`
	KeyID          string `json:"kms_key_id,omitempty"`
	Region         string `json:"kms_region,omitempty"`
	Binding        string `json:"binding,omitempty"`
	BindingMatches *bool  `json:"binding_matches,omitempty"`
	WrappedBytes   int    `json:"wrapped_key_bytes,omitempty"`
	// kmsagent-image tokens:
	ImageSize *uint64 `json:"image_size,omitempty"`
	// Error says why a token of ours does not parse.
	Error string `json:"error,omitempty"`
}

// Inspect reads the header of an image (or device) and summarises it.
func Inspect(img Disk) (*Info, error) {
	h, err := volume.ReadHeader(img)
	if err != nil {
		return nil, err
	}
	size, err := img.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("image size: %w", err)
	}
	info := &Info{
		Version: 2, UUID: h.UUID(), Label: h.Label(), Subsystem: h.Subsystem(), SeqID: h.SeqID(),
		MetadataSize: h.MetadataSize(), KeyslotsSize: h.KeyslotsSize(),
		Flags: nonNil(h.Flags()), Requirements: nonNil(h.Requirements()), Warnings: nonNil(h.Warnings()),
		Keyslots: []KeyslotInfo{}, Tokens: []TokenInfo{},
	}
	if s, err := h.Segment(); err != nil {
		info.Warnings = append(info.Warnings, err.Error())
	} else {
		info.Segment = SegmentInfo{
			Offset: s.Offset, Size: strconv.FormatUint(s.Size, 10), Cipher: s.Encryption, KeyBits: s.KeySize * 8,
			SectorSize: s.SectorSize, IVTweak: s.IVTweak, Integrity: s.Integrity,
		}
		if s.Dynamic {
			info.Segment.Size = "dynamic"
		}
		if l, err := layout(h, size); err != nil {
			info.Warnings = append(info.Warnings, err.Error())
		} else {
			info.Segment.PayloadSize = l.payload
			if l.recorded {
				info.Segment.ImageSize = &l.out
			}
			info.Warnings = append(info.Warnings, l.warnings...)
		}
	}
	byKeyslot := map[int][]int{}
	for _, id := range h.TokenIDs() {
		raw, _ := h.Token(id)
		ti := describeToken(id, raw, h.UUID())
		for _, k := range ti.Keyslots {
			byKeyslot[k] = append(byKeyslot[k], id)
		}
		info.Tokens = append(info.Tokens, ti)
	}
	for _, ks := range h.Keyslots() {
		info.Keyslots = append(info.Keyslots, KeyslotInfo{
			ID: ks.ID, Type: ks.Type, KeyBits: ks.KeySize * 8, Priority: priority(ks.Priority), Unbound: ks.Type == "luks2" && !ks.Bound,
			KDF:    KDFInfo{Type: ks.KDF.Type, Hash: ks.KDF.Hash, Iterations: ks.KDF.Iterations, Time: ks.KDF.Time, MemoryKiB: ks.KDF.MemoryKiB, CPUs: ks.KDF.CPUs},
			Cipher: ks.AreaEncryption, Tokens: nonNil(byKeyslot[ks.ID]),
		})
	}
	return info, nil
}

func describeToken(id int, raw []byte, uuid string) TokenInfo {
	var generic struct {
		Type     string   `json:"type"`
		Keyslots []string `json:"keyslots"`
	}
	json.Unmarshal(raw, &generic)
	ti := TokenInfo{ID: id, Type: generic.Type, Keyslots: []int{}}
	for _, k := range generic.Keyslots {
		if n, err := strconv.Atoi(k); err == nil {
			ti.Keyslots = append(ti.Keyslots, n)
		}
	}
	switch generic.Type {
	case token.Type:
		t, err := token.Parse(raw)
		if err != nil {
			ti.Error = err.Error()
			break
		}
		match := t.Binding == uuid
		ti.Provider, ti.KeyID, ti.Region = t.KMS.Provider, t.KMS.KeyID, t.KMS.Region
		ti.Binding, ti.BindingMatches, ti.WrappedBytes = t.Binding, &match, len(t.WrappedKey)
	case token.ImageType:
		im, err := token.ParseImage(raw)
		if err != nil {
			ti.Error = err.Error()
			break
		}
		ti.ImageSize = &im.Size
	}
	return ti
}

func priority(p int) string {
	switch p {
	case 0:
		return "ignore"
	case 2:
		return "prefer"
	}
	return "normal"
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// WriteText prints the summary for people.
func (i *Info) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	row("LUKS version", i.Version)
	// Every text taken from the image goes through printable: a label
	// is any 47 bytes, and the terminal must not interpret them.
	row("UUID", printable(i.UUID))
	if i.Label != "" {
		row("Label", printable(i.Label))
	}
	if i.Subsystem != "" {
		row("Subsystem", printable(i.Subsystem))
	}
	row("Metadata", fmt.Sprintf("%d bytes per copy, keyslot area %d bytes, seqid %d", i.MetadataSize, i.KeyslotsSize, i.SeqID))
	if len(i.Requirements) > 0 {
		row("Requirements", printable(strings.Join(i.Requirements, ", ")))
	}
	// Without a usable data segment (see the warnings) there is nothing
	// to show for it.
	if s := i.Segment; s.Size != "" {
		data := fmt.Sprintf("%s, %d-bit key, %d-byte sectors, offset %d", printable(s.Cipher), s.KeyBits, s.SectorSize, s.Offset)
		if s.Size != "dynamic" {
			data += fmt.Sprintf(", size %s bytes", s.Size)
		}
		row("Data", data)
		payload := fmt.Sprintf("%d bytes", s.PayloadSize)
		if s.ImageSize != nil {
			payload += fmt.Sprintf(" (raw image %d bytes)", *s.ImageSize)
		}
		row("Payload", payload)
	}
	tw.Flush()
	fmt.Fprintln(w, "Keyslots:")
	for _, k := range i.Keyslots {
		if k.Type != "luks2" {
			what := "unknown keyslot type, never opened"
			if k.Type == "reencrypt" {
				what = "a reencryption is in progress, which kmsagent does not support"
			}
			fmt.Fprintf(w, "  %d: %s (%s)\n", k.ID, printable(k.Type), what)
			continue
		}
		kdf := printable(k.KDF.Type)
		if k.KDF.Type == luks2.KDFPBKDF2 {
			kdf += fmt.Sprintf(" %s, %d iterations", printable(k.KDF.Hash), k.KDF.Iterations)
		} else {
			kdf += fmt.Sprintf(" time %d, %d KiB, %d cpus", k.KDF.Time, k.KDF.MemoryKiB, k.KDF.CPUs)
		}
		used := ""
		if len(k.Tokens) > 0 {
			used = fmt.Sprintf(", token %v", k.Tokens)
		}
		typ := k.Type
		if k.Unbound {
			typ += " (unbound)" // as cryptsetup luksDump shows it
		}
		fmt.Fprintf(w, "  %d: %s, %d-bit key, %s, %s%s\n", k.ID, typ, k.KeyBits, k.Priority, kdf, used)
	}
	fmt.Fprintln(w, "Tokens:")
	sort.Slice(i.Tokens, func(a, b int) bool { return i.Tokens[a].ID < i.Tokens[b].ID })
	for _, t := range i.Tokens {
		line := fmt.Sprintf("  %d: %s, keyslots %v", t.ID, printable(t.Type), t.Keyslots)
		switch {
		case t.Error != "":
			line += ": " + printable(t.Error)
		case t.Type == token.Type:
			line += fmt.Sprintf(", %s key %s", printable(t.Provider), printable(t.KeyID))
			if t.Region != "" {
				line += " in " + printable(t.Region)
			}
			if t.BindingMatches != nil && !*t.BindingMatches {
				line += fmt.Sprintf(", BOUND TO ANOTHER VOLUME (%s)", printable(t.Binding))
			}
		case t.ImageSize != nil:
			line += fmt.Sprintf(", raw image size %d bytes", *t.ImageSize)
		}
		fmt.Fprintln(w, line)
	}
	for _, warn := range i.Warnings {
		fmt.Fprintf(w, "Warning: %s\n", printable(warn))
	}
	return nil
}

// printable returns s as it is when it is valid UTF-8 and every rune is
// printable, and otherwise quoted with Go escapes (\x1b, \u200b, \xff),
// so that no control character or malformed byte from a header reaches
// the terminal.
func printable(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
