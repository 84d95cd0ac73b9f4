package source

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	volA  = "0b7c6b2e-7a5d-4c4e-8f3a-5f0c2a9d1e44"
	volB  = "9d0e1f2a-3b4c-4d5e-8f60-718293a4b5c6"
	uuidA = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
	uuidB = "6fa459ea-ee8a-4ca4-894e-db77e160355e"
)

func TestResolveFake(t *testing.T) {
	hdrA, hdrB := luksHeader(t, uuidA), luksHeader(t, uuidB)
	plain := make([]byte, 1<<20)
	tests := []struct {
		name    string
		devs    []fakeDev
		spec    string
		want    string // device name under DevRoot
		wantErr error
		msg     string // part of the error text
		devices []string
	}{
		{
			name: "evs, virtio serial",
			devs: []fakeDev{
				{name: "vda", dev: "253:0", serial: "root-disk-serial-000"},
				{name: "vdb", dev: "253:16", serial: volA[:20]},
				{name: "vdc", dev: "253:32", serial: volB[:20]},
			},
			spec: "evs:" + volA, want: "vdb",
		},
		{
			name: "evs, case folded",
			devs: []fakeDev{{name: "vdb", dev: "253:16", serial: strings.ToUpper(volA[:20])}},
			spec: "evs:" + volA, want: "vdb",
		},
		{
			name: "evs, SCSI VPD page 0x80, space padded",
			devs: []fakeDev{
				{name: "sda", dev: "8:0", vpd80: vpd80(volB[:20] + "    ")},
				{name: "sdb", dev: "8:16", vpd80: vpd80(volA[:20])},
			},
			spec: "evs:" + volA, want: "sdb",
		},
		{
			name: "evs, partitions carry no serial",
			devs: []fakeDev{
				{name: "vdb", dev: "253:16", serial: volA[:20]},
				{name: "vdb1", dev: "253:17"},
			},
			spec: "evs:" + volA, want: "vdb",
		},
		{
			name:    "evs, not attached",
			devs:    []fakeDev{{name: "vdb", dev: "253:16", serial: volB[:20]}},
			spec:    "evs:" + volA,
			wantErr: ErrNotFound, msg: `no disk has serial "0b7c6b2e-7a5d-4c4e-8"`,
		},
		{
			name: "evs, two disks with one serial",
			devs: []fakeDev{
				{name: "vdb", dev: "253:16", serial: volA[:20]},
				{name: "vdc", dev: "253:32", serial: volA[:20]},
			},
			spec:    "evs:" + volA,
			wantErr: ErrAmbiguous, devices: []string{"vdb", "vdc"},
		},
		{
			name:    "evs, match without a /dev node",
			devs:    []fakeDev{{name: "vdb", dev: "253:16", serial: volA[:20], noNode: true}},
			spec:    "evs:" + volA,
			wantErr: ErrNotFound, msg: "is devtmpfs mounted",
		},
		{
			name: "uuid, among other devices",
			devs: []fakeDev{
				{name: "vda", dev: "253:0", content: plain},
				{name: "vdb", dev: "253:16", content: hdrB},
				{name: "vdc", dev: "253:32", content: hdrA},
			},
			spec: "UUID=" + strings.ToUpper(uuidA), want: "vdc",
		},
		{
			name: "uuid, node name from DEVNAME",
			devs: []fakeDev{{name: "cciss!c0d0", dev: "104:0", content: hdrA}},
			spec: "UUID=" + uuidA, want: "cciss/c0d0",
		},
		{
			name: "uuid, damaged primary header",
			devs: []fakeDev{{name: "vdb", dev: "253:16", content: func() []byte {
				b := slices.Clone(hdrA)
				clear(b[:4096])
				return b
			}()}},
			spec: "UUID=" + uuidA, want: "vdb",
		},
		{
			name: "uuid, cloned disk",
			devs: []fakeDev{
				{name: "vdb", dev: "253:16", content: hdrA},
				{name: "vdc", dev: "253:32", content: hdrA},
			},
			spec:    "UUID=" + uuidA,
			wantErr: ErrAmbiguous, msg: "snapshot", devices: []string{"vdb", "vdc"},
		},
		{
			name: "uuid, multipath map over its paths",
			devs: []fakeDev{
				{name: "sda", dev: "8:0", content: hdrA},
				{name: "sdb", dev: "8:16", content: hdrA},
				{name: "dm-0", dev: "254:0", content: hdrA, slaves: []string{"sda", "sdb"}},
			},
			spec: "UUID=" + uuidA, want: "dm-0",
		},
		{
			name: "uuid, empty and suspended devices are not read",
			devs: []fakeDev{
				{name: "loop0", dev: "7:0", size: "0", content: hdrA},
				{name: "dm-1", dev: "254:1", suspended: true, content: hdrA},
			},
			spec:    "UUID=" + uuidA,
			wantErr: ErrNotFound, msg: "none of the 2 block devices",
		},
		{
			name: "uuid, unreadable device named",
			devs: []fakeDev{
				{name: "vdb", dev: "253:16", content: hdrB},
				{name: "vdc", dev: "253:32", noNode: true},
			},
			spec:    "UUID=" + uuidA,
			wantErr: ErrNotFound, msg: "1 could not be read: vdc:",
		},
		{
			name:    "malformed",
			spec:    "UUID=nope",
			wantErr: ErrInvalidSpec,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fakeTree(t, tt.devs...)
			got, err := r.Resolve(context.Background(), tt.spec)
			if tt.wantErr == nil {
				if want := filepath.Join(r.DevRoot, tt.want); err != nil || got != want {
					t.Fatalf("Resolve(%s) = %q, %v; want %s", tt.spec, got, err, want)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Resolve(%s) = %q, %v; want %v", tt.spec, got, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), tt.spec) {
				t.Errorf("error %q should name the source and say %q", err, tt.msg)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%T is not an *Error", err)
			}
			var want []string
			for _, d := range tt.devices {
				want = append(want, filepath.Join(r.DevRoot, d))
			}
			if !slices.Equal(e.Devices, want) {
				t.Errorf("Devices = %v, want %v", e.Devices, want)
			}
			t.Log(err)
		})
	}
}

func TestMatchesFake(t *testing.T) {
	hdrA := luksHeader(t, uuidA)
	r := fakeTree(t,
		fakeDev{name: "vdb", dev: "253:16", serial: volA[:20]},
		fakeDev{name: "vdc", dev: "253:32", content: hdrA},
		fakeDev{name: "vdd", dev: "253:48", content: make([]byte, 8192)},
	)
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, hdrA, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec, dev string
		want      bool
		wantErr   error
	}{
		{"evs:" + volA, "vdb", true, nil},
		{"evs:" + volB, "vdb", false, nil},
		{"evs:" + volA, "vdc", false, nil},
		{"UUID=" + uuidA, "vdc", true, nil},
		{"UUID=" + uuidB, "vdc", false, nil},
		{"UUID=" + uuidA, "vdd", false, nil},
		{"UUID=" + uuidA, "vdx", false, nil}, // gone
		{img, "vdc", false, nil},             // an image file is never hot-plugged
		{"/nonexistent/disk", "vdc", false, nil},
		{"vdc", "vdc", false, ErrInvalidSpec},
	}
	for _, tt := range tests {
		got, err := r.Matches(context.Background(), tt.spec, tt.dev)
		if got != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("Matches(%s, %s) = %v, %v; want %v, %v", tt.spec, tt.dev, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestResolvePath(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "data.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink("data.img", link); err != nil {
		t.Fatal(err)
	}
	dangling := filepath.Join(dir, "dangling")
	if err := os.Symlink("missing", dangling); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec, want string
		wantErr    error
		msg        string
	}{
		{spec: img, want: img},
		{spec: link, want: img},
		{spec: filepath.Join(dir, "missing"), wantErr: ErrNotFound, msg: "does not exist"},
		{spec: dangling, wantErr: ErrNotFound, msg: "dangling"},
		{spec: dir, wantErr: ErrNotBlockDevice, msg: "is a directory"},
		{spec: "/dev/null", wantErr: ErrNotBlockDevice, msg: "is a character device"},
	}
	for _, tt := range tests {
		got, err := Resolve(context.Background(), tt.spec)
		if got != tt.want || !errors.Is(err, tt.wantErr) || (err != nil && !strings.Contains(err.Error(), tt.msg)) {
			t.Errorf("Resolve(%s) = %q, %v; want %q, %v saying %q", tt.spec, got, err, tt.want, tt.wantErr, tt.msg)
		}
	}
}

// TestNodeChecked checks that a node which is not the block device sysfs
// names is refused, not read.
func TestNodeChecked(t *testing.T) {
	r := fakeTree(t, fakeDev{name: "vdb", dev: "253:16", serial: volA[:20]})
	r.checkNode = nil // the real check: a regular file is no block device
	_, err := r.Resolve(context.Background(), "evs:"+volA)
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "not a block device node") {
		t.Fatalf("Resolve with a regular file as node = %v", err)
	}
}

func TestResolveCancelled(t *testing.T) {
	r := fakeTree(t, fakeDev{name: "vdb", dev: "253:16", content: luksHeader(t, uuidA)})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.Resolve(ctx, "UUID="+uuidA); !errors.Is(err, context.Canceled) {
		t.Fatalf("Resolve with a cancelled context = %v", err)
	}
	if _, err := r.Matches(ctx, "UUID="+uuidA, "vdb"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Matches with a cancelled context = %v", err)
	}
}

func TestNoSysfs(t *testing.T) {
	r := &Resolver{SysRoot: filepath.Join(t.TempDir(), "nosys")}
	_, err := r.Resolve(context.Background(), "evs:"+volA)
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "is sysfs mounted") {
		t.Fatalf("Resolve without sysfs = %v", err)
	}
}

func FuzzSysfs(f *testing.F) {
	f.Add([]byte("MAJOR=253\nMINOR=16\nDEVNAME=vdb\n"), vpd80(volA[:20]))
	f.Add([]byte("253:16\n"), []byte{0, 0x80, 0xff, 0xff})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, uevent, vpd []byte) {
		ueventValue(uevent, "DEVNAME")
		parseDevNum(string(uevent))
		if s := vpdSerial(vpd); len(s) > len(vpd) {
			t.Fatalf("serial %q longer than its page", s)
		}
	})
}
