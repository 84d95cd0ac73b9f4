package dm

import (
	"fmt"
	"strconv"
	"strings"
)

// CryptTarget is the type name of dm-crypt targets.
const CryptTarget = "crypt"

// CryptParams is the parameter string of a dm-crypt target
// (Documentation/admin-guide/device-mapper/dm-crypt.rst):
//
//	<cipher> <key> <iv_offset> <device> <offset> [<#opt> <opt>...]
//
// The key is always a reference into the kernel keyring,
// ":<key size>:<key type>:<key description>", never the key itself.
type CryptParams struct {
	Cipher   string // e.g. "aes-xts-plain64"
	KeySize  int    // key size in bytes, e.g. 64 for AES-256-XTS
	KeyType  string // keyring key type, "logon"
	KeyDesc  string // key description, e.g. "kmsagent:<name>"
	IVOffset uint64 // added to the sector number for the IV
	Device   string // backing device: a path or "major:minor"
	Offset   uint64 // start of the data on Device, in 512-byte sectors

	AllowDiscards bool // pass discards down (reveals free space)
	SectorSize    int  // encryption sector size; 0 means 512
	// Extra holds further optional parameters verbatim, in order.
	Extra []string

	// InlineKey is set by ParseCryptParams when the table holds a key
	// in hex instead of a keyring reference. The key is not kept.
	InlineKey bool
}

// KeyRef is the key field of the table, ":<size>:<type>:<description>".
func (p CryptParams) KeyRef() string {
	return ":" + strconv.Itoa(p.KeySize) + ":" + p.KeyType + ":" + p.KeyDesc
}

// Validate checks the fields a table line needs; it refuses blanks inside
// fields, which would shift the blank-separated table.
func (p CryptParams) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"cipher", p.Cipher}, {"key type", p.KeyType}, {"key description", p.KeyDesc}, {"device", p.Device},
	} {
		if f.v == "" {
			return fmt.Errorf("dm: crypt table: %s is empty", f.name)
		}
		if strings.ContainsAny(f.v, " \t\n\r\x00") {
			return fmt.Errorf("dm: crypt table: %s %q contains a blank", f.name, f.v)
		}
	}
	if p.InlineKey {
		return fmt.Errorf("dm: crypt table: refusing an inline key; reference a keyring key instead")
	}
	if p.KeyType != "logon" && p.KeyType != "user" {
		return fmt.Errorf("dm: crypt table: key type %q is not logon or user", p.KeyType)
	}
	// The kernel refuses logon keys without a "prefix:" (EINVAL).
	if p.KeyType == "logon" && strings.IndexByte(p.KeyDesc, ':') <= 0 {
		return fmt.Errorf("dm: crypt table: logon key description %q lacks a \"prefix:\"", p.KeyDesc)
	}
	if p.KeySize <= 0 || p.KeySize > 1024 {
		return fmt.Errorf("dm: crypt table: key size %d out of range", p.KeySize)
	}
	switch p.SectorSize {
	case 0, 512, 1024, 2048, 4096:
	default:
		return fmt.Errorf("dm: crypt table: sector size %d is not 512, 1024, 2048 or 4096", p.SectorSize)
	}
	for _, o := range p.Extra {
		if o == "" || strings.ContainsAny(o, " \t\n\r\x00") {
			return fmt.Errorf("dm: crypt table: optional parameter %q is empty or contains a blank", o)
		}
	}
	return nil
}

// String renders the parameter string. It does not validate; Target does.
func (p CryptParams) String() string {
	f := []string{
		p.Cipher, p.KeyRef(),
		strconv.FormatUint(p.IVOffset, 10), p.Device, strconv.FormatUint(p.Offset, 10),
	}
	opts := p.options()
	if len(opts) > 0 {
		f = append(f, strconv.Itoa(len(opts)))
		f = append(f, opts...)
	}
	return strings.Join(f, " ")
}

func (p CryptParams) options() []string {
	var o []string
	if p.AllowDiscards {
		o = append(o, "allow_discards")
	}
	if p.SectorSize != 0 && p.SectorSize != 512 {
		o = append(o, "sector_size:"+strconv.Itoa(p.SectorSize))
	}
	return append(o, p.Extra...)
}

// Target returns a crypt target over [0, length) sectors, validated.
func (p CryptParams) Target(length uint64) (Target, error) {
	if err := p.Validate(); err != nil {
		return Target{}, err
	}
	return Target{Start: 0, Length: length, Type: CryptTarget, Params: p.String()}, nil
}

// ParseCryptParams parses a crypt parameter string, as loaded or as the
// kernel reports it in a table status. A hex key is recognised and
// reported through InlineKey, but its value is dropped.
func ParseCryptParams(s string) (CryptParams, error) {
	var p CryptParams
	f := strings.Fields(s)
	if len(f) < 5 {
		return p, fmt.Errorf("dm: crypt table %q: want at least 5 fields, have %d", redactCrypt(f), len(f))
	}
	p.Cipher = f[0]
	if err := p.parseKey(f[1]); err != nil {
		return p, err
	}
	var err error
	if p.IVOffset, err = strconv.ParseUint(f[2], 10, 64); err != nil {
		return p, fmt.Errorf("dm: crypt table: iv_offset %q: not a number", f[2])
	}
	p.Device = f[3]
	if p.Offset, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return p, fmt.Errorf("dm: crypt table: offset %q: not a number", f[4])
	}
	rest := f[5:]
	if len(rest) == 0 {
		return p, nil
	}
	n, err := strconv.Atoi(rest[0])
	if err != nil || n != len(rest)-1 {
		return p, fmt.Errorf("dm: crypt table: optional parameter count %q does not match the %d that follow", rest[0], len(rest)-1)
	}
	for _, o := range rest[1:] {
		switch {
		case o == "allow_discards":
			p.AllowDiscards = true
		case strings.HasPrefix(o, "sector_size:"):
			v, err := strconv.Atoi(strings.TrimPrefix(o, "sector_size:"))
			if err != nil {
				return p, fmt.Errorf("dm: crypt table: %q: bad sector size", o)
			}
			p.SectorSize = v
		default:
			p.Extra = append(p.Extra, o)
		}
	}
	return p, nil
}

// parseKey reads the key field: ":<size>:<type>:<desc>", "-" for an empty
// key, or a hex key, which is only flagged.
func (p *CryptParams) parseKey(k string) error {
	if !strings.HasPrefix(k, ":") {
		p.InlineKey = k != "-"
		return nil
	}
	parts := strings.SplitN(k[1:], ":", 3)
	if len(parts) != 3 || parts[1] == "" || parts[2] == "" {
		return fmt.Errorf("dm: crypt table: key reference %q is not :<size>:<type>:<description>", k)
	}
	size, err := strconv.Atoi(parts[0])
	if err != nil || size <= 0 {
		return fmt.Errorf("dm: crypt table: key reference %q: bad key size", k)
	}
	p.KeySize, p.KeyType, p.KeyDesc = size, parts[1], parts[2]
	return nil
}

// redactCrypt joins table fields for an error message with the key field
// replaced when it is not a keyring reference.
func redactCrypt(f []string) string {
	g := append([]string(nil), f...)
	if len(g) > 1 && !strings.HasPrefix(g[1], ":") && g[1] != "-" {
		g[1] = "<key redacted>"
	}
	return strings.Join(g, " ")
}

// KeyringOnly checks a table as the kernel reports it (Control.Table):
// every crypt target must show a keyring reference, not a hex key. Use it
// after activation to confirm no key ended up in the table.
func KeyringOnly(targets []Target) error {
	for _, t := range targets {
		if t.Type != CryptTarget {
			continue
		}
		p, err := ParseCryptParams(t.Params)
		if err != nil {
			return err
		}
		if p.InlineKey {
			return fmt.Errorf("dm: crypt target at sector %d holds a key in the table instead of a keyring reference", t.Start)
		}
	}
	return nil
}
