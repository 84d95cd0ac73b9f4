package volume

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"kmsagent/blockdev/probe"
)

// lvmLabel is the label pvcreate writes into sector 1.
var lvmLabel = []byte("LABELONE\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00LVM2 001")

// mdSuperblock is the start of an MD RAID 1.x superblock at off.
func mdSuperblock(off int64) []byte {
	b := make([]byte, 136)
	binary.LittleEndian.PutUint32(b, 0xa92b4efc)
	binary.LittleEndian.PutUint32(b[4:], 1)
	binary.LittleEndian.PutUint64(b[128:], uint64(off)/512)
	return b
}

// TestChangeRefusesAmbiguous checks that enroll, unenroll and rewrap
// refuse a LUKS2 volume that also holds another signature, or whose
// primary header is not LUKS2, and leave it as it was: luks2 reads the
// LUKS2 copy that is valid and rewrites both, which destroys the other
// format (rewrap once overwrote an LVM2 label this way and reported that
// only the token changed).
func TestChangeRefusesAmbiguous(t *testing.T) {
	k := newKMS(t)
	at := func(off int64, b []byte) func(*os.File) {
		return func(f *os.File) {
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name  string
		spoil func(*os.File)
		want  string
	}{
		{"lvm2 label in the header padding", at(512, lvmLabel), "an LVM2 physical volume (at offset 0x218)"},
		// pvcreate over a LUKS2 volume: its label lands in the binary
		// header's padding and its metadata area in the primary's JSON,
		// so only the secondary copy is valid.
		{"pvcreate over the volume", func(f *os.File) {
			at(512, lvmLabel)(f)
			at(4096, []byte("\x00\x00\x00\x00 LVM2 x[5A%r0N*>\x01\x00\x00\x00vg0 {\nid = \"x\"\n}\n"))(f)
		}, "LVM2"},
		{"ext4 superblock", at(1024+56, []byte{0x53, 0xEF}), "an ext2 file system"},
		{"swap signature", at(4086, []byte("SWAPSPACE2")), "a swap area"},
		{"md raid 1.0 at the end", at(imageSize-8192, mdSuperblock(imageSize-8192)), "MD RAID member (superblock 1.0)"},
		{"btrfs in the keyslot area", func(f *os.File) {
			at(0x10040, []byte("_BHRfS_M"))(f)
			at(0x10090, []byte{0, 0x10, 0, 0})(f)
		}, "a Btrfs file system"},
		// A LUKS1 header with a stale LUKS2 secondary copy behind it:
		// writing LUKS2 would overwrite the LUKS1 keyslots.
		{"luks1 primary", at(6, []byte{0, 1}), "a LUKS1 header (at offset 0x0)"},
		{"unknown luks version", at(6, []byte{0, 3}), "a LUKS header of version 3"},
	}
	ops := []struct {
		name     string
		enrolled bool
		run      func(f *os.File) error
	}{
		{"enroll", false, func(f *os.File) error {
			_, err := Enroll(ctx, f, k.store, []byte("pass"), EnrollOptions{KeyID: k.key})
			return err
		}},
		{"unenroll", true, func(f *os.File) error { _, err := Unenroll(ctx, f); return err }},
		{"rewrap", true, func(f *os.File) error { _, err := Rewrap(ctx, f, k.store, k.key); return err }},
	}
	for _, op := range ops {
		for _, tt := range tests {
			t.Run(op.name+"/"+tt.name, func(t *testing.T) {
				path, f := luksFormatted(t, "pass")
				if op.enrolled {
					if _, err := Enroll(ctx, f, k.store, []byte("pass"), EnrollOptions{KeyID: k.key}); err != nil {
						t.Fatal(err)
					}
				}
				tt.spoil(f)
				before := fileHash(t, path)
				err := op.run(f)
				var amb *AmbiguousError
				if !errors.As(err, &amb) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "ambiguous") {
					t.Fatalf("%s: %v, want an AmbiguousError naming %q", op.name, err, tt.want)
				}
				if fileHash(t, path) != before {
					t.Fatalf("a refused %s changed the device", op.name)
				}
			})
		}
	}
}

// TestChangeAcceptsDamagedLUKS2 checks the other side: a LUKS2 volume
// whose primary header is damaged or gone, with nothing else on the
// device, is still changed (and the write repairs the primary), as
// cryptsetup would.
func TestChangeAcceptsDamagedLUKS2(t *testing.T) {
	k := newKMS(t)
	for _, tt := range []struct {
		name  string
		spoil func(*os.File)
	}{
		{"primary JSON damaged", func(f *os.File) { f.WriteAt([]byte("!"), 4096+10) }},
		{"primary wiped", func(f *os.File) { f.WriteAt(make([]byte, 4096), 0) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, f := luksFormatted(t, "pass")
			tt.spoil(f)
			if _, err := Enroll(ctx, f, k.store, []byte("pass"), EnrollOptions{KeyID: k.key}); err != nil {
				t.Fatalf("Enroll: %v", err)
			}
			sigs, err := probe.Scan(f, imageSize)
			if err != nil || len(sigs) != 2 || sigs[0].Version != 2 || sigs[0].Secondary {
				t.Fatalf("after enroll: %v %v", sigs, err)
			}
		})
	}
}
