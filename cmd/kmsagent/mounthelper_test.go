package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
)

func TestParseMountHelperArgs(t *testing.T) {
	tests := []struct {
		args    []string
		want    mountHelperArgs
		wantErr string
	}{
		{args: []string{"/c", "/p"}, want: mountHelperArgs{source: "/c", target: "/p"}},
		// What mount(8) runs for "/c /p kmsagent defaults,_netdev,nofail,x-systemd.automount,ro 0 0".
		{args: []string{"/c", "/p", "-n", "-o", "rw,_netdev,nofail,x-systemd.automount,defaults,ro,comment=x", "-t", "kmsagent"},
			want: mountHelperArgs{source: "/c", target: "/p", options: []string{"rw", "ro"}}},
		{args: []string{"/c", "/p", "-sfnv", "-onodev"}, want: mountHelperArgs{source: "/c", target: "/p", options: []string{"nodev"}, sloppy: true, fake: true, verbose: true}},
		{args: []string{"-v", "--", "/c", "-p"}, want: mountHelperArgs{source: "/c", target: "-p", verbose: true}},
		{args: []string{"/c"}, wantErr: "usage: mount.kmsagent SOURCE TARGET"},
		{args: []string{"/c", "/p", "/q"}, wantErr: "usage: mount.kmsagent SOURCE TARGET"},
		{args: []string{"/c", "/p", "-o"}, wantErr: "option -o needs a value"},
		{args: []string{"/c", "/p", "-x"}, wantErr: "unknown option -x"},
		{args: []string{"/c", "/p", "-t", "ext4"}, wantErr: `type "ext4" is not kmsagent`},
		{args: []string{"/c", "/p", "-N", "/proc/1/ns/mnt"}, wantErr: "-N (mount in another namespace) is not supported"},
	}
	for _, tt := range tests {
		got, err := parseMountHelperArgs(tt.args)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.source != tt.want.source || got.target != tt.want.target || !slices.Equal(got.options, tt.want.options) ||
			got.sloppy != tt.want.sloppy || got.fake != tt.want.fake || got.verbose != tt.want.verbose {
			t.Errorf("%q: got %+v, %v; want %+v", tt.args, got, err, tt.want)
		}
	}
}

// TestMountHelperKind: a directory is mounted as a share, anything else
// as a LUKS2 volume; -s drops what a share does not know.
func TestMountHelperKind(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "disk.img"), "", 0o600)
	tests := []struct {
		source  string
		options []string
		sloppy  bool
		want    string
		wantErr string
	}{
		{source: dir, options: []string{"ro", "nodev"}, want: "mount fuse -o ro,nodev -- " + dir + " /p"},
		{source: dir, options: []string{"discard"}, wantErr: "unknown option -o discard"},
		{source: dir, options: []string{"discard", "ro"}, sloppy: true, want: "mount fuse -o ro -- " + dir + " /p"},
		{source: file, options: []string{"ro", "discard"}, want: "mount luks --read-only -o ro,discard -- " + file + " /p"},
		{source: "/dev/vdb", want: "mount luks -o  -- /dev/vdb /p"},
	}
	for _, tt := range tests {
		a := mountHelperArgs{source: tt.source, target: "/p", options: tt.options, sloppy: tt.sloppy}
		got, err := a.kmsagentArgs(func(string) {})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v: error %v, want %q", tt.options, err, tt.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != tt.want {
			t.Errorf("%s %v: got %q, %v; want %q", tt.source, tt.options, got, err, tt.want)
		}
	}
}

// TestMountHelper runs the binary under the name mount.kmsagent, as
// mount(8) does for an fstab line of type kmsagent, on a real share.
func TestMountHelper(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")
	cipher, plain := shareDirs(h)
	helper := filepath.Join(t.TempDir(), mountHelperName)
	if err := os.Symlink(h.bin, helper); err != nil {
		t.Fatal(err)
	}
	mountHelper := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(helper, args...)
		cmd.Env = append(os.Environ(), "KMSAGENT_CONFIG="+h.config)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), 0
	}

	if out, code := mountHelper(cipher, plain, "-o", "bogus"); code != mountExitUsage || !strings.Contains(out, "unknown option -o bogus") {
		t.Fatalf("bad option: exit %d, %q", code, out)
	}
	if out, code := mountHelper(cipher, plain, "-f", "-o", "defaults"); code != 0 || tstest.Mounted(t, plain) {
		t.Fatalf("-f: exit %d, mounted %v: %q", code, tstest.Mounted(t, plain), out)
	}
	out, code := mountHelper(cipher, plain, "-n", "-o", "rw,nodev,_netdev,nofail,x-systemd.automount,defaults", "-t", "kmsagent")
	t.Cleanup(func() {
		if tstest.Mounted(t, plain) {
			h.kmsagent(nil, "umount", "--lazy", plain)
		}
	})
	if code != 0 {
		t.Fatalf("mount.kmsagent: exit %d: %s", code, out)
	}
	data := randomBytes(70000)
	if err := os.WriteFile(filepath.Join(plain, "f"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if st := h.must("status"); !strings.Contains(st, plain) || !strings.Contains(st, "running") {
		t.Fatalf("status: %s", st)
	}
	if out, code := mountHelper(cipher, plain); code != mountExitFailure || !strings.Contains(out, "already") {
		t.Fatalf("second mount: exit %d, %q", code, out)
	}
	h.must("umount", plain)
	if out, code := mountHelper(cipher, plain, "-o", "ro"); code != 0 {
		t.Fatalf("mount.kmsagent -o ro: exit %d: %s", code, out)
	}
	if got, err := os.ReadFile(filepath.Join(plain, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	if err := os.WriteFile(filepath.Join(plain, "g"), nil, 0o600); err == nil {
		t.Fatal("wrote to a read-only mount")
	}
	h.must("umount", plain)
}
