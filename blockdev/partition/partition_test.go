package partition

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

// sfdiskImage makes an image of size bytes partitioned by sfdisk with
// script (its input format), optionally on a loop device with 4096-byte
// sectors, and returns its path.
func sfdiskImage(t *testing.T, size int64, sector int, script string) string {
	t.Helper()
	sfdisk := tstest.NeedTool(t, "sfdisk", "fdisk")
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	target := path
	if sector != 512 {
		target = loop(t, path, sector)
	}
	cmd := exec.Command(sfdisk, "-q", "--no-reread", "--no-tell-kernel", target)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	return path
}

// loop attaches path with the given logical sector size.
func loop(t *testing.T, path string, sector int) string {
	t.Helper()
	tstest.NeedRoot(t, "loop devices with 4096-byte sectors")
	out, err := exec.Command("losetup", "-f", "--show", "-b", itoa(sector), path).CombinedOutput()
	if err != nil {
		tstest.Unavailable(t, "losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func itoa(n int) string { return strconv.Itoa(n) }

// verify runs the partitioning tools' own checks on an image.
func verify(t *testing.T, path string, sector int) {
	t.Helper()
	target := path
	if sector != 512 {
		target = loop(t, path, sector)
	}
	out, err := exec.Command(tstest.NeedTool(t, "sfdisk", "fdisk"), "--verify", target).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors detected") {
		t.Fatalf("sfdisk --verify: %v: %s", err, out)
	}
	if gpt, _ := exec.Command("sfdisk", "--dump", target).Output(); bytes.Contains(gpt, []byte("label: gpt")) {
		out, err = exec.Command(tstest.NeedTool(t, "sgdisk", "gdisk"), "-v", target).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "No problems found") {
			t.Fatalf("sgdisk -v: %v: %s", err, out)
		}
	}
}

// sfdiskTable is what sfdisk --json reports, for comparison with Read.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		SectorSize int    `json:"sectorsize"`
		Partitions []struct {
			Node  string `json:"node"`
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdiskJSON(t *testing.T, path string, sector int) sfdiskTable {
	t.Helper()
	target := path
	if sector != 512 {
		target = loop(t, path, sector)
	}
	out, err := exec.Command("sfdisk", "--json", target).Output()
	if err != nil {
		t.Fatalf("sfdisk --json: %v", err)
	}
	var st sfdiskTable
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func readFile(t *testing.T, path string) *Table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	tab, err := Read(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// sameAsSfdisk checks Read against sfdisk's view of the same image.
func sameAsSfdisk(t *testing.T, tab *Table, st sfdiskTable) {
	t.Helper()
	pt := st.PartitionTable
	id := strings.TrimPrefix(pt.ID, "0x")
	if tab.Scheme != pt.Label || !strings.EqualFold(tab.DiskID, id) || tab.SectorSize != pt.SectorSize || len(tab.Partitions) != len(pt.Partitions) {
		t.Fatalf("Read: %s %s %d-byte sectors, %d partitions; sfdisk: %+v", tab.Scheme, tab.DiskID, tab.SectorSize, len(tab.Partitions), pt)
	}
	ss := int64(pt.SectorSize)
	for i, sp := range pt.Partitions {
		p := tab.Partitions[i]
		typ := sp.Type
		if pt.Label == MBR {
			typ = "0x" + strings.Repeat("0", 2-len(typ)) + typ
		}
		if p.Start != sp.Start*ss || p.Size != sp.Size*ss || !strings.EqualFold(p.Type, typ) || p.Name != sp.Name ||
			(pt.Label == GPT && !strings.EqualFold(p.UUID, sp.UUID)) || !strings.HasSuffix(sp.Node, itoa(p.Number)) {
			t.Fatalf("partition %d: Read %+v, sfdisk %+v", i+1, p, sp)
		}
	}
}

const (
	mib    = 1 << 20
	header = 16 * mib // what a partition grows by for LUKS2
)

// TestResize grows one partition of images made by sfdisk by the size
// of a LUKS2 header, writes the new table and lets sfdisk and sgdisk
// check it; then shrinks it back, which must give the original bytes.
func TestResize(t *testing.T) {
	tests := []struct {
		name   string
		size   int64
		sector int
		script string
		n      int
		grow   int64 // expected growth of the disk; -1: by what the free space lacks
		noRoom bool
	}{
		// The root ends at the last usable sector, as in cloud images.
		{"gpt last", 64 * mib, 512, "label: gpt\nsize=1M, type=21686148-6449-6E6F-744E-656564454649, name=bios\nsize=8M, type=U, name=esp\nsize=110559, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n", 3, header, false},
		// Debian's cloud images: BIOS boot 14 and ESP 15 first, root 1
		// last, to the last usable sector.
		{"gpt numbered as in Debian", 64 * mib, 512, "label: gpt\ndisk.img14 : start=2048, size=6144, type=21686148-6449-6E6F-744E-656564454649\ndisk.img15 : start=8192, size=16384, type=U\ndisk.img1 : start=24576, size=106463, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n", 1, header, false},
		{"gpt numbered as in Debian, not the last", 64 * mib, 512, "label: gpt\ndisk.img14 : start=2048, size=6144, type=21686148-6449-6E6F-744E-656564454649\ndisk.img15 : start=8192, size=16384, type=U\ndisk.img1 : start=24576, size=106463, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\n", 14, 0, true},
		{"gpt middle, free space after", 64 * mib, 512, "label: gpt\nsize=8M, type=U\nsize=10M, type=L, name=root\nstart=40M, type=L, name=data\n", 2, 0, false},
		{"gpt middle, no room", 64 * mib, 512, "label: gpt\n,8M,U\n,10M,L\n,,L\n", 2, 0, true},
		{"gpt last, some free space", 64 * mib, 512, "label: gpt\n,8M,U\n,40M,L\n", 2, -1, false},
		{"gpt 4096-byte sectors", 64 * mib, 4096, "label: gpt\n,8M,U\n,,L\n", 2, -1, false},
		{"mbr last", 64 * mib, 512, "label: dos\n,8M,c,*\n,16M,83\n,,83\n", 3, header, false},
		{"mbr first, free space after", 64 * mib, 512, "label: dos\nsize=8M, type=83\nstart=40M, type=83\n", 1, 0, false},
		{"mbr middle, no room", 64 * mib, 512, "label: dos\n,8M,c\n,16M,83\n,,83\n", 2, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := sfdiskImage(t, tt.size, tt.sector, tt.script)
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tab := readFile(t, path)
			sameAsSfdisk(t, tab, sfdiskJSON(t, path, tt.sector))
			p, err := tab.Partition(tt.n)
			if err != nil {
				t.Fatal(err)
			}
			grown, err := tab.Resize(tt.n, p.Size+header)
			var nr *NoRoomError
			if tt.noRoom {
				if !errors.As(err, &nr) || nr.Number != tt.n || nr.Grow != header {
					t.Fatalf("Resize: %v, want a NoRoomError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.grow < 0 { // by what the free space after it lacks
				tt.grow = header - (tab.UsableEnd - p.End())
			}
			if got := grown.DiskSize - tab.DiskSize; got != tt.grow {
				t.Fatalf("the disk grew by %d bytes, want %d", got, tt.grow)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(grown.DiskSize); err != nil {
				t.Fatal(err)
			}
			if err := grown.Write(f); err != nil {
				t.Fatal(err)
			}
			f.Close()
			verify(t, path, tt.sector)
			after := readFile(t, path)
			sameAsSfdisk(t, after, sfdiskJSON(t, path, tt.sector))
			q, _ := after.Partition(tt.n)
			if q.Size != p.Size+header || q.Start != p.Start || q.UUID != p.UUID || q.Type != p.Type || q.Name != p.Name || after.DiskID != tab.DiskID {
				t.Fatalf("after: %+v, before: %+v", q, p)
			}

			// Back: the original table, and with a disk of the original
			// size, the original bytes, when the partition ended at the
			// end of the usable area; the free space it took otherwise is
			// not given back to the end of the disk.
			back, err := after.Resize(tt.n, p.Size)
			if err != nil {
				t.Fatal(err)
			}
			if p.End() != tab.UsableEnd && tt.grow != 0 {
				if want := tab.DiskSize - (tab.UsableEnd - p.End()); back.DiskSize != want {
					t.Fatalf("shrunk back to a %d-byte disk, want %d", back.DiskSize, want)
				}
				return
			}
			if back.DiskSize != tab.DiskSize {
				t.Fatalf("shrunk back to a %d-byte disk, want %d", back.DiskSize, tab.DiskSize)
			}
			img := make([]byte, back.DiskSize)
			copy(img, orig)
			if err := back.Write(writerAt(img)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(img, orig) {
				for i := range img {
					if img[i] != orig[i] {
						t.Fatalf("growing and shrinking back changed the table, first at byte %d (LBA %d)", i, i/tab.SectorSize)
					}
				}
			}
		})
	}
}

type writerAt []byte

func (w writerAt) WriteAt(p []byte, off int64) (int, error) { return copy(w[off:], p), nil }

// TestExtended: of an MBR with an extended partition, the primary ones
// are listed and can be resized; the extended one cannot, and logical
// ones are named as unsupported.
func TestExtended(t *testing.T) {
	path := sfdiskImage(t, 64*mib, 512, "label: dos\nsize=8M, type=83\nsize=40M, type=5\nstart=20480, size=10M, type=83\nstart=43008, size=10M, type=83\n")
	tab := readFile(t, path)
	if len(tab.Partitions) != 2 || !tab.Partitions[1].Extended || len(tab.Warnings) != 1 || !strings.Contains(tab.Warnings[0], "logical partitions inside it are not listed") {
		t.Fatalf("%+v", tab)
	}
	for _, tt := range []struct {
		n    int
		want string
	}{
		{2, "partition 2 is an extended partition"},
		{5, "partition 5 does not exist (logical partitions inside an extended one are not supported); the dos table has partitions 1, 2"},
		{1, "partition 1 is not the last one and has 0 bytes free after it (before partition 2)"},
	} {
		if _, err := tab.Resize(tt.n, 64*mib); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Resize(%d): %v, want %q", tt.n, err, tt.want)
		}
	}
}
