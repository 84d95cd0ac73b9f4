package config

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

const volumesDoc = `[agent]
admin_group = "kmsadmin"
close_on_stop = true

[[volume]]
name = "data"
type = "luks"
source = "UUID=0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
target = "/srv/data"
fs_type = "ext4"
options = ["noatime", "nodev"]
auto = true

[[volume]]
name = "disk2"
type = "luks"
source = "evs:5a7f3a4e-1111-4000-8000-000000000000"

[[volume]]
name = "share"
type = "fuse"
source = "/srv/cipher/share"
target = "/srv/share"
readonly = true
`

func TestVolumes(t *testing.T) {
	c, err := Parse([]byte(volumesDoc))
	if err != nil {
		t.Fatal(err)
	}
	if c.Agent.AdminGroup != "kmsadmin" || !c.Agent.CloseOnStop || c.Agent.Socket != DefaultAgentSocket {
		t.Errorf("agent: %+v", c.Agent)
	}
	if len(c.Volumes) != 3 || c.Volumes[0].Options[1] != "nodev" || !c.Volumes[0].Auto || !c.Volumes[2].ReadOnly {
		t.Errorf("volumes: %+v", c.Volumes)
	}

	vol := func(extra string) string {
		return "[[volume]]\nname = \"v\"\ntype = \"luks\"\nsource = \"/dev/vdb\"\n" + extra
	}
	tests := []struct {
		name, doc, want string
		is              error
	}{
		{"unknown key", vol("mountpoint = \"/x\"\n"), ":5: unknown key volume.mountpoint", nil},
		{"bad type", "[[volume]]\nname = \"v\"\ntype = \"zfs\"\nsource = \"/d\"\n", `volume "v": type = "zfs"`, ErrVolumeType},
		{"no name", "[[volume]]\ntype = \"luks\"\nsource = \"/d\"\n", `volume[0]: name = ""`, ErrVolumeName},
		{"bad name", "[[volume]]\nname = \"a/b\"\ntype = \"luks\"\nsource = \"/d\"\n", `volume[0]: name = "a/b"`, ErrVolumeName},
		{"relative source", "[[volume]]\nname = \"v\"\ntype = \"luks\"\nsource = \"dev/vdb\"\n", `volume "v": source = "dev/vdb"`, ErrVolumeSource},
		{"unclean source", "[[volume]]\nname = \"v\"\ntype = \"luks\"\nsource = \"/dev/../vdb\"\n", `source = "/dev/../vdb"`, ErrVolumeSource},
		{"bad uuid", "[[volume]]\nname = \"v\"\ntype = \"luks\"\nsource = \"UUID=xyz\"\n", `UUID= needs`, ErrVolumeSource},
		{"bad evs", "[[volume]]\nname = \"v\"\ntype = \"luks\"\nsource = \"evs:\"\n", `evs: needs`, ErrVolumeSource},
		{"fuse by uuid", "[[volume]]\nname = \"v\"\ntype = \"fuse\"\ntarget = \"/m\"\nsource = \"UUID=0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d\"\n", `not a UUID`, ErrVolumeSource},
		{"no source", "[[volume]]\nname = \"v\"\ntype = \"luks\"\n", `source is required`, ErrVolumeSource},
		{"relative target", vol("target = \"srv\"\n"), `volume "v": target = "srv"`, ErrVolumePath},
		{"fuse no target", "[[volume]]\nname = \"v\"\ntype = \"fuse\"\nsource = \"/c\"\n", `volume "v": target is required`, nil},
		{"fuse fs_type", "[[volume]]\nname = \"v\"\ntype = \"fuse\"\nsource = \"/c\"\ntarget = \"/m\"\nfs_type = \"ext4\"\n", `remove fs_type`, nil},
		{"fs_type no target", vol("fs_type = \"ext4\"\n"), `needs a target`, nil},
		{"bad fs_type", vol("target = \"/m\"\nfs_type = \"ext4 -o x\"\n"), `fs_type = "ext4 -o x"`, nil},
		{"joined options", vol("options = [\"ro,nodev\"]\n"), `one mount option`, nil},
		{"duplicate name", vol("") + vol(""), `volume "v": name: duplicate`, ErrDuplicate},
		{"duplicate target", vol("target = \"/m\"\n") + "[[volume]]\nname = \"w\"\ntype = \"fuse\"\nsource = \"/c\"\ntarget = \"/m\"\n", `volume "w": target: duplicate: /m is also the target of volume "v"`, ErrDuplicate},
		{"relative socket", "[agent]\nsocket = \"agent.sock\"\n", `agent.socket = "agent.sock"`, ErrVolumePath},
		{"bad group", "[agent]\nadmin_group = \"a b\"\n", `agent.admin_group`, nil},
		{"wrong type", "[agent]\nclose_on_stop = \"yes\"\n", `:2:`, nil},
		{"retry min above max", "[agent]\nretry_min_delay = \"10m\"\n", `agent.retry_min_delay = "10m0s", retry_max_delay = "5m0s"`, nil},
		{"retry too short", "[agent]\nretry_min_delay = \"1ms\"\n", `from 100ms to 24h`, nil},
		{"retry too long", "[agent]\nretry_max_delay = \"48h\"\n", `from 100ms to 24h`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, not %v", err, tc.is)
			}
		})
	}
}

// FuzzVolumes: any [[volume]] table gives a valid volume or a one-line
// error naming a volume or the table, never a panic.
func FuzzVolumes(f *testing.F) {
	f.Add("data", "luks", "UUID=0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d", "/srv/data", "ext4", "noatime")
	f.Add("share", "fuse", "/srv/cipher", "/srv/share", "", "")
	f.Add("d", "luks", "evs:abc-1", "", "", "")
	f.Add("", "x", "UUID=", "rel", "Ext 4", "a,b")
	f.Add("v\n", "luks", "/dev/../x", "/m/", "xfs", "\x00")
	f.Fuzz(func(t *testing.T, name, typ, source, target, fs, opt string) {
		v := Volume{Name: name, Type: typ, Source: source, Target: target, FSType: fs}
		if opt != "" {
			v.Options = []string{opt}
		}
		err := ValidateVolumes([]Volume{v, {Name: "other", Type: "luks", Source: "/dev/vdz"}})
		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Fatalf("multi-line error %q", msg)
			}
			if !strings.HasPrefix(msg, "volume[") && !strings.HasPrefix(msg, "volume \"") {
				t.Fatalf("error does not name the volume: %q", msg)
			}
			return
		}
		if !volumeNameRE.MatchString(v.Name) || (v.Type != VolumeLUKS && v.Type != VolumeFUSE) || v.Source == "" {
			t.Fatalf("accepted %+v", v)
		}
		if v.Target != "" && !absClean(v.Target) {
			t.Fatalf("accepted target %q", v.Target)
		}
	})
}

// The name rules as regular expressions: the oracle for the loops that
// replace them.
var (
	volumeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	evsIDRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,127}$`)
	fsTypeRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)
)

func TestNameRules(t *testing.T) {
	var inputs []string
	for _, c := range []string{"", "a", "Z", "0", "_", ".", "-", ":", "/", " ", "\n", "é", "\x00"} {
		for _, n := range []int{1, 2, 31, 32, 33, 62, 63, 64, 127, 128, 129} {
			inputs = append(inputs, strings.Repeat(c, n), "a"+strings.Repeat(c, n-1), "a"+strings.Repeat(c, n), "A"+strings.Repeat(c, n)+"1")
		}
	}
	for _, s := range inputs {
		for _, r := range []struct {
			name string
			loop func(string) bool
			re   *regexp.Regexp
		}{{"volume name", validVolumeName, volumeNameRE}, {"evs id", validEVSID, evsIDRE}, {"fs type", validFSType, fsTypeRE}} {
			if got, want := r.loop(s), r.re.MatchString(s); got != want {
				t.Errorf("%s %q: %v, want %v", r.name, s, got, want)
			}
		}
	}
}

func FuzzNameRules(f *testing.F) {
	f.Add("data-1.x")
	f.Add("ext4")
	f.Add("a\n")
	f.Fuzz(func(t *testing.T, s string) {
		if validVolumeName(s) != volumeNameRE.MatchString(s) || validEVSID(s) != evsIDRE.MatchString(s) || validFSType(s) != fsTypeRE.MatchString(s) {
			t.Fatalf("%q: the loops and the regular expressions disagree", s)
		}
	})
}
