package cryptkey

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"kmsagent/agent/source"
)

// DefaultCrypttab is where systemd-cryptsetup-generator reads volumes.
const DefaultCrypttab = "/etc/crypttab"

// maxCrypttabSize bounds what is read of a crypttab: real ones are a few
// lines, and the file is read on every key request.
const maxCrypttabSize = 1 << 20

// ErrUnknownVolume means no crypttab line (or configured volume) has the
// name a client asked for.
var ErrUnknownVolume = errors.New("unknown volume")

// ErrInvalidCrypttab is wrapped by every crypttab parse error.
var ErrInvalidCrypttab = errors.New("invalid crypttab")

// Entry is one crypttab line: name, encrypted device, key file, options.
type Entry struct {
	Line    int    // 1-based line number, for messages
	Name    string // the volume name: /dev/mapper/<Name>
	Device  string // a path or UUID=, PARTUUID=, LABEL=, PARTLABEL=, ID=, PATH=
	KeyFile string // empty when the field is absent, "-" or "none"
	Options []string
}

// ParseCrypttab reads crypttab lines as systemd-cryptsetup-generator
// does: blank lines and lines starting with # are skipped; the rest have
// two to four fields separated by spaces or tabs, with no quoting (so a
// LABEL= with a blank cannot be written). Unlike the generator, which
// logs and skips a line of fewer fields and ignores fields past the
// fourth, a malformed line is an error here: the caller is about to hand
// out a key on the strength of this file.
// Options are split at commas; systemd's backslash escapes inside
// options are not interpreted (they matter only for option values this
// package does not read).
func ParseCrypttab(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(io.LimitReader(r, maxCrypttabSize+1))
	sc.Buffer(make([]byte, 0, 4096), maxCrypttabSize+1)
	n, size := 0, 0
	for sc.Scan() {
		n++
		line := sc.Text()
		size += len(line) + 1
		if size > maxCrypttabSize {
			return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidCrypttab, maxCrypttabSize)
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if !utf8.ValidString(line) || strings.ContainsFunc(line, isControl) {
			return nil, fmt.Errorf("%w: line %d: contains a control character or invalid UTF-8", ErrInvalidCrypttab, n)
		}
		f := strings.Fields(line)
		if len(f) < 2 || len(f) > 4 {
			return nil, fmt.Errorf("%w: line %d has %d fields; want name, device and optionally key file and options", ErrInvalidCrypttab, n, len(f))
		}
		e := Entry{Line: n, Name: f[0], Device: f[1]}
		if err := checkName(e.Name); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrInvalidCrypttab, n, err)
		}
		if len(f) > 2 && f[2] != "-" && f[2] != "none" {
			e.KeyFile = f[2]
		}
		if len(f) > 3 {
			for o := range strings.SplitSeq(f[3], ",") {
				if o != "" {
					e.Options = append(e.Options, o)
				}
			}
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%w: a line is longer than %d bytes", ErrInvalidCrypttab, maxCrypttabSize)
		}
		return nil, fmt.Errorf("read crypttab: %w", err)
	}
	return out, nil
}

func isControl(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }

// checkName applies systemd-cryptsetup's rule for volume names (a valid
// file name: not empty, not . or .., no slash, at most 255 bytes) and
// refuses control characters, which systemd allows but which have no
// business in a name that ends up in logs.
func checkName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return fmt.Errorf("volume name %q is not a valid file name", name)
	case len(name) > 255:
		return fmt.Errorf("volume name is %d bytes, more than 255", len(name))
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("volume name %q contains a slash", name)
	case !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("volume name %q contains a control character or invalid UTF-8", name)
	}
	return nil
}

// Crypttab is the default Lookup: it finds the volume's line in a
// crypttab and resolves its device field.
//
// The file is read on every request, so an edit takes effect without a
// restart. UUID= and absolute paths go to package source (UUID= is
// matched against the LUKS2 header UUID of every block device in sysfs,
// and two devices with the same UUID are refused rather than guessed
// between). PARTUUID=, LABEL=, PARTLABEL=, ID= and PATH= name udev's
// /dev/disk/by-* links, as systemd-cryptsetup-generator turns them into
// device paths; systemd starts systemd-cryptsetup@.service only after
// that device unit exists, so the link is there when the key is asked
// for.
type Crypttab struct {
	// Path is the crypttab to read; empty means DefaultCrypttab.
	Path string
	// Resolver resolves UUID= and paths; the zero value uses /sys and /dev.
	Resolver source.Resolver
	// DevRoot is where the /dev/disk/by-* links are looked up; empty
	// means /dev. Tests point it at a fake tree.
	DevRoot string
}

// Lookup returns the device of the crypttab line called name.
func (c *Crypttab) Lookup(ctx context.Context, name string) (string, error) {
	path := c.Path
	if path == "" {
		path = DefaultCrypttab
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read crypttab: %w", err)
	}
	defer f.Close()
	entries, err := ParseCrypttab(f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	var found *Entry
	for i := range entries {
		if entries[i].Name != name {
			continue
		}
		if found != nil {
			return "", fmt.Errorf("%s: volume %q is on lines %d and %d; keep one", path, name, found.Line, entries[i].Line)
		}
		found = &entries[i]
	}
	if found == nil {
		return "", fmt.Errorf("%w %q: no line of %s names it", ErrUnknownVolume, name, path)
	}
	dev, err := c.resolve(ctx, found.Device)
	if err != nil {
		return "", fmt.Errorf("%s line %d: %w", path, found.Line, err)
	}
	return dev, nil
}

// udevLinks maps the crypttab tags that name a udev link to its
// directory, as systemd's fstab_node_to_udev_node does.
var udevLinks = map[string]string{
	"LABEL":     "by-label",
	"PARTUUID":  "by-partuuid",
	"PARTLABEL": "by-partlabel",
	"ID":        "by-id",
	"PATH":      "by-path",
}

func (c *Crypttab) resolve(ctx context.Context, dev string) (string, error) {
	if strings.HasPrefix(dev, "UUID=") || filepath.IsAbs(dev) {
		return c.Resolver.Resolve(ctx, dev)
	}
	tag, value, ok := strings.Cut(dev, "=")
	dir, known := udevLinks[tag]
	if !ok || !known || value == "" {
		return "", fmt.Errorf("device %q: use a path, UUID=, PARTUUID=, LABEL=, PARTLABEL=, ID= or PATH=", dev)
	}
	value = unquote(value)
	if value == "." || value == ".." {
		return "", fmt.Errorf("device %q: %q is not a name udev links", dev, value)
	}
	root := c.DevRoot
	if root == "" {
		root = "/dev"
	}
	link := filepath.Join(root, "disk", dir, encodeDevnode(value))
	return c.Resolver.Resolve(ctx, link)
}

// unquote strips one pair of matching quotes, as systemd does for tag
// values.
func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

// encodeDevnode escapes a tag value the way udev names its by-label and
// similar links: ASCII letters, digits and #+-.:=@_ and valid multi-byte
// UTF-8 stay, everything else becomes \xNN.
func encodeDevnode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || n > 1 {
				b.WriteString(s[i : i+n])
				i += n
				continue
			}
		} else if c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("#+-.:=@_", c) >= 0 {
			b.WriteByte(c)
			i++
			continue
		}
		fmt.Fprintf(&b, `\x%02x`, c)
		i++
	}
	return b.String()
}
