package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/luks2"
)

// content returns size bytes of zeros with each piece (offset, bytes)
// written in.
func content(size int, pieces ...any) []byte {
	b := make([]byte, size)
	for i := 0; i+1 < len(pieces); i += 2 {
		copy(b[pieces[i].(int):], pieces[i+1].(string))
	}
	return b
}

func le32s(v uint32) string { return string(binary.LittleEndian.AppendUint32(nil, v)) }

// ext returns an ext2 superblock with 1024<<logBlock-byte blocks.
func ext(logBlock uint32) []byte {
	return content(1<<20, 1024+0x18, le32s(logBlock), 1024+0x38, "\x53\xef")
}

// sectorSizeOf encrypts data both ways (to a stream and to a file) with
// the requested sector size and returns what the headers say, checking
// that both agree with the result.
func (f fixture) sectorSizeOf(t *testing.T, data []byte, requested int) (int, *Result, error) {
	t.Helper()
	var stream bytes.Buffer
	res, err := Encrypt(ctx, bytes.NewReader(data), &stream, f.opts(requested, int64(len(data))))
	if err != nil {
		if stream.Len() != 0 {
			t.Fatalf("a refused encrypt wrote %d bytes", stream.Len())
		}
		path := filepath.Join(t.TempDir(), "x.img")
		out, _ := CreateOutput(path, 0o600)
		defer out.Abort()
		_, ferr := EncryptFile(ctx, bytes.NewReader(data), out.File, f.opts(requested, -1))
		if ferr == nil || ferr.Error() != err.Error() {
			t.Fatalf("Encrypt: %v but EncryptFile: %v", err, ferr)
		}
		return 0, nil, err
	}
	h, err := luks2.Read(bytes.NewReader(stream.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	seg, _ := h.Segment()
	path := filepath.Join(t.TempDir(), "x.img")
	out, _ := CreateOutput(path, 0o600)
	fres, err := EncryptFile(ctx, bytes.NewReader(data), out.File, f.opts(requested, -1))
	if err != nil {
		t.Fatal(err)
	}
	out.Commit()
	img, _ := os.Open(path)
	defer img.Close()
	fh, err := luks2.Read(img)
	if err != nil {
		t.Fatal(err)
	}
	fseg, _ := fh.Segment()
	if seg.SectorSize != res.SectorSize || fseg.SectorSize != fres.SectorSize || res.SectorSize != fres.SectorSize || res.SectorSizeFor != fres.SectorSizeFor {
		t.Fatalf("headers %d, %d; results %+v, %+v", seg.SectorSize, fseg.SectorSize, res, fres)
	}
	// What was looked at to choose is still encrypted as the input.
	back, _ := decryptFile(t, path, DecryptOptions{KMS: f.kms})
	if !bytes.Equal(back, data) {
		t.Fatal("decrypt does not give back the input")
	}
	return res.SectorSize, res, nil
}

// TestSectorSizeFromContent: an ext4 with 1024-byte blocks in 4096-byte
// encryption sectors cannot be mounted ("bad block size 1024"), so the
// sector size follows the input's file system unless given, and a given
// one that cannot work is refused.
func TestSectorSizeFromContent(t *testing.T) {
	f := newFixture(t)
	gpt4k := content(1<<20, 446+4, "\xee", 510, "\x55\xaa", 4096, "EFI PART")
	tests := []struct {
		name      string
		data      []byte
		requested int
		want      int    // 0: refused
		wantFor   string // in the result, or in the error when refused
	}{
		{"zeros", make([]byte, 1<<20), 0, 4096, ""},
		{"short input", []byte("hello"), 0, 4096, ""},
		{"ext 1k", ext(0), 0, 512, "an ext2 file system (1024-byte blocks)"},
		{"ext 2k", ext(1), 0, 512, "2048-byte blocks"},
		{"ext 4k", ext(2), 0, 4096, ""},
		{"ext 1k, 4096 asked", ext(0), 4096, 0, "the input holds an ext2 file system (1024-byte blocks), which cannot be used on a device with 4096-byte sectors"},
		{"ext 1k, 512 asked", ext(0), 512, 512, ""},
		{"ext 4k, 512 asked", ext(2), 512, 512, ""},
		{"xfs 512-byte sectors", content(1<<20, 0, "XFSB\x00\x00\x10\x00", 102, "\x02\x00"), 0, 512, "XFS"},
		{"xfs 512-byte sectors, 4096 asked", content(1<<20, 0, "XFSB\x00\x00\x10\x00", 102, "\x02\x00"), 4096, 0, "XFS file system (512-byte sectors)"},
		{"btrfs", content(1<<20, 0x10040, "_BHRfS_M", 0x10090, le32s(4096)), 0, 4096, ""},
		{"fat 512", content(1<<20, 11, "\x00\x02", 82, "FAT32", 510, "\x55\xaa"), 0, 512, "FAT"},
		{"fat 512, 4096 asked", content(1<<20, 11, "\x00\x02", 82, "FAT32", 510, "\x55\xaa"), 4096, 0, "FAT file system (512-byte sectors)"},
		{"swap", content(1<<20, 4086, "SWAPSPACE2"), 0, 4096, ""},
		{"mbr", content(1<<20, 446, "\x80", 510, "\x55\xaa"), 0, 512, "MBR"},
		{"mbr, 4096 asked", content(1<<20, 446, "\x80", 510, "\x55\xaa"), 4096, 4096, ""},
		{"gpt 4k with its protective mbr", gpt4k, 0, 4096, ""},
		{"gpt 512, 4096 asked", content(1<<20, 510, "\x55\xaa", 512, "EFI PART"), 4096, 0, "GPT partition table (512-byte sectors)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, res, err := f.sectorSizeOf(t, tt.data, tt.requested)
			if tt.want == 0 {
				var sse *SectorSizeError
				if !errors.As(err, &sse) || !strings.Contains(err.Error(), tt.wantFor) {
					t.Fatalf("err %v, want a SectorSizeError with %q", err, tt.wantFor)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || !strings.Contains(res.SectorSizeFor, tt.wantFor) || (tt.wantFor == "") != (res.SectorSizeFor == "") {
				t.Fatalf("sector size %d (for %q), want %d (for %q)", got, res.SectorSizeFor, tt.want, tt.wantFor)
			}
		})
	}
}

// TestSectorSizeRealFileSystems runs the check on file systems made by
// the real tools on image files. Only the first MiB is encrypted: the
// choice depends on the start alone.
func TestSectorSizeRealFileSystems(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		tool, pkg string
		args      []string
		size      int64
		want      int
	}{
		{"mkfs.ext4", "e2fsprogs", []string{"-q", "-b", "1024"}, 32 << 20, 512},
		{"mkfs.ext4", "e2fsprogs", []string{"-q"}, 8 << 20, 512}, // mkfs's default for small file systems
		{"mkfs.ext4", "e2fsprogs", []string{"-q", "-b", "4096"}, 32 << 20, 4096},
		{"mkfs.xfs", "xfsprogs", []string{"-q", "-f"}, 32 << 20, 512},
		{"mkfs.xfs", "xfsprogs", []string{"-q", "-f", "-s", "size=4096"}, 32 << 20, 4096},
		{"mkfs.vfat", "dosfstools", []string{"-S", "1024"}, 32 << 20, 512},
	}
	for _, tt := range tests {
		t.Run(tt.tool+strings.Join(tt.args, ""), func(t *testing.T) {
			mkfs := tstest.NeedTool(t, tt.tool, tt.pkg)
			path := filepath.Join(t.TempDir(), "fs.raw")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, tt.size); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(mkfs, append(tt.args, path)...)
			// mkfs.xfs makes file systems under 300 MB only for its test
			// suite, which these variables stand for.
			cmd.Env = append(os.Environ(), "TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tt.tool, err, out)
			}
			raw, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			head, err := io.ReadAll(io.LimitReader(raw, 1<<20))
			if err != nil {
				t.Fatal(err)
			}
			got, res, err := f.sectorSizeOf(t, head, 0)
			if err != nil || got != tt.want {
				t.Fatalf("sector size %d (%+v), want %d: %v", got, res, tt.want, err)
			}
			if tt.want == 512 {
				if _, _, err := f.sectorSizeOf(t, head, 4096); err == nil {
					t.Fatal("4096-byte sectors accepted")
				}
			}
		})
	}
}
