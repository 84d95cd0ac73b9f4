package mountinfo

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	in := "36 35 98:0 /mnt1 /mnt/with\\040blank rw,noatime master:1 - ext4 /dev/mapper/a rw\n" +
		"37 35 254:3 / /srv rw shared:2 - xfs /dev/dm-3 rw\n" +
		"90 29 0:45 / /mnt/a\\040b rw,nosuid - fuse.kmsagent /srv/cipher\\040dir rw,user_id=0\n" +
		"garbage line\n"
	ms, err := Parse(strings.NewReader(in))
	if err != nil || len(ms) != 3 {
		t.Fatalf("%v %v", ms, err)
	}
	if ms[0].Mountpoint != "/mnt/with blank" || ms[0].FSType != "ext4" || ms[0].Dev != unix.Mkdev(98, 0) || ms[0].Options != "rw,noatime" {
		t.Errorf("%+v", ms[0])
	}
	if ms[1].ID != 37 || ms[1].Dev != unix.Mkdev(254, 3) || ms[1].Source != "/dev/dm-3" {
		t.Errorf("%+v", ms[1])
	}
	if ms[2].Source != "/srv/cipher dir" || ms[2].FSType != "fuse.kmsagent" {
		t.Errorf("%+v", ms[2])
	}
}

func TestReadSelf(t *testing.T) {
	ms, err := Read()
	if err != nil || len(ms) == 0 {
		t.Fatalf("%d entries, %v", len(ms), err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("90 29 0:45 / /mnt/a\\040b rw - fuse.kmsagent /srv/c rw\n")
	f.Fuzz(func(t *testing.T, s string) {
		Parse(strings.NewReader(s))
	})
}
