package cryptkey

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseCrypttab(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Entry
		err  string
	}{
		{name: "empty", in: "", want: nil},
		{
			name: "comments and blanks",
			in:   "# header\n\n   \t\n  # indented comment\n",
			want: nil,
		},
		{
			name: "all fields",
			in:   "data UUID=0f6c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f /run/kmsagent/cryptsetup.sock luks,_netdev\n",
			want: []Entry{{Line: 1, Name: "data", Device: "UUID=0f6c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f", KeyFile: "/run/kmsagent/cryptsetup.sock", Options: []string{"luks", "_netdev"}}},
		},
		{
			name: "two fields, tabs, none and dash",
			in:   "a\t/dev/vdb\nb /dev/vdc none\nc /dev/vdd - luks,,discard",
			want: []Entry{
				{Line: 1, Name: "a", Device: "/dev/vdb"},
				{Line: 2, Name: "b", Device: "/dev/vdc"},
				{Line: 3, Name: "c", Device: "/dev/vdd", Options: []string{"luks", "discard"}},
			},
		},
		{name: "one field", in: "data\n", err: "line 1 has 1 fields"},
		{name: "five fields", in: "# x\ndata /dev/vdb none luks extra\n", err: "line 2 has 5 fields"},
		{name: "slash in name", in: "a/b /dev/vdb\n", err: "contains a slash"},
		{name: "dot name", in: ".. /dev/vdb\n", err: "not a valid file name"},
		{name: "control character", in: "da\x01ta /dev/vdb\n", err: "control character"},
		{name: "invalid UTF-8", in: "da\xffta /dev/vdb\n", err: "invalid UTF-8"},
		{name: "long line", in: "a " + strings.Repeat("x", maxCrypttabSize+1), err: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCrypttab(strings.NewReader(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrInvalidCrypttab) {
					t.Fatalf("err = %v, want ErrInvalidCrypttab containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// FuzzParseCrypttab holds the parser to its promises on any input: no
// panic, and every entry it returns has a valid name, a device, at most
// four fields' worth of text and no control characters.
func FuzzParseCrypttab(f *testing.F) {
	for _, s := range []string{
		"",
		"data UUID=0f6c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f /run/kmsagent/cryptsetup.sock luks,_netdev\n",
		"# c\n\na\t/dev/vdb\tnone\tluks,,discard\r\n",
		"x LABEL=\"mydisk\" - luks\n",
		"a/b /dev/vdb\n",
		"\x00 \xff\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		entries, err := ParseCrypttab(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, e := range entries {
			if checkName(e.Name) != nil || e.Device == "" || e.KeyFile == "-" || e.KeyFile == "none" {
				t.Fatalf("bad entry %+v", e)
			}
			for _, s := range append([]string{e.Name, e.Device, e.KeyFile}, e.Options...) {
				if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) || strings.ContainsAny(s, " \t") {
					t.Fatalf("field %q of %+v has a control character, blank or invalid UTF-8", s, e)
				}
			}
		}
	})
}

func TestCrypttabLookup(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "data.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A fake /dev/disk with the links udev would make.
	dev := filepath.Join(dir, "dev")
	for _, link := range []string{
		"by-label/mydisk",
		"by-partuuid/0f6c1d2e-01",
		"by-partlabel/data\\x2fpart",
		"by-id/virtio-0123456789abc",
		"by-path/pci-0000:00:05.0",
		"by-label/caf\u00e9\\x5cnoir",
	} {
		p := filepath.Join(dev, "disk", link)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(img, p); err != nil {
			t.Fatal(err)
		}
	}
	tab := filepath.Join(dir, "crypttab")
	content := strings.Join([]string{
		"# name device keyfile options",
		"path " + img + " /run/kmsagent/cryptsetup.sock luks",
		`label LABEL="mydisk" /run/kmsagent/cryptsetup.sock`,
		"partuuid PARTUUID=0f6c1d2e-01 /run/kmsagent/cryptsetup.sock",
		"partlabel PARTLABEL=data/part /run/kmsagent/cryptsetup.sock",
		"id ID=virtio-0123456789abc /run/kmsagent/cryptsetup.sock",
		"bypath PATH=pci-0000:00:05.0 /run/kmsagent/cryptsetup.sock",
		`utf8 LABEL=café\noir none`,
		"twice /dev/vdb none",
		"twice /dev/vdc none",
		"missing " + filepath.Join(dir, "nothing") + " none",
		"dotdot LABEL=.. none",
		"unknown FOO=bar none",
		"relative dev/vdb none",
	}, "\n")
	if err := os.WriteFile(tab, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Crypttab{Path: tab, DevRoot: dev}
	ctx := context.Background()
	for _, name := range []string{"path", "label", "partuuid", "partlabel", "id", "bypath", "utf8"} {
		got, err := c.Lookup(ctx, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if got != img {
			t.Errorf("%s: got %s, want %s", name, got, img)
		}
	}
	for name, want := range map[string]string{
		"nosuch":   "unknown volume",
		"twice":    "lines 9 and 10",
		"missing":  "does not exist",
		"dotdot":   "not a name udev links",
		"unknown":  "use a path, UUID=",
		"relative": "use a path, UUID=",
	} {
		_, err := c.Lookup(ctx, name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want one containing %q", name, err, want)
		}
		if name == "nosuch" && !errors.Is(err, ErrUnknownVolume) {
			t.Errorf("%s: %v is not ErrUnknownVolume", name, err)
		}
	}
	if _, err := (&Crypttab{Path: filepath.Join(dir, "none")}).Lookup(ctx, "x"); err == nil {
		t.Error("a missing crypttab gave no error")
	}
}

func TestEncodeDevnode(t *testing.T) {
	for in, want := range map[string]string{
		"data":          "data",
		"my disk":       `my\x20disk`,
		"a/b":           `a\x2fb`,
		`back\slash`:    `back\x5cslash`,
		"café":          "café",
		"bad\xffbyte":   `bad\xffbyte`,
		"#+-.:=@_ok09Z": "#+-.:=@_ok09Z",
	} {
		if got := encodeDevnode(in); got != want {
			t.Errorf("encodeDevnode(%q) = %q, want %q", in, got, want)
		}
	}
}
