package source

import (
	"context"
	"os"
	"testing"

	"kmsagent/blockdev/vmtest"
)

// TestGuestVirtio runs in the VM of TestVMVirtioSerial: vda is volume
// volA with a LUKS2 header of uuidA, vdb is volume volB and empty.
func TestGuestVirtio(t *testing.T) {
	vmtest.RequireGuest(t)
	vmtest.Report(t)
	ctx := context.Background()
	if b, err := os.ReadFile("/sys/class/block/vda/serial"); err == nil {
		vmtest.Data("vda-serial", string(b))
	}
	if _, err := os.Stat("/dev/disk"); err == nil {
		t.Error("/dev/disk exists: this test is meant for a system without udev")
	}
	for _, tt := range []struct{ spec, want string }{
		{"evs:" + volA, "/dev/vda"},
		{"evs:" + volB, "/dev/vdb"},
		{"UUID=" + uuidA, "/dev/vda"},
	} {
		if got, err := Resolve(ctx, tt.spec); err != nil || got != tt.want {
			t.Errorf("Resolve(%s) = %q, %v; want %s", tt.spec, got, err, tt.want)
		}
	}
	for _, tt := range []struct {
		spec, dev string
		want      bool
	}{
		{"evs:" + volA, "vda", true},
		{"evs:" + volA, "vdb", false},
		{"UUID=" + uuidA, "vda", true},
		{"UUID=" + uuidA, "vdb", false},
		{"/dev/vdb", "vdb", true},
	} {
		if got, err := Matches(ctx, tt.spec, tt.dev); err != nil || got != tt.want {
			t.Errorf("Matches(%s, %s) = %v, %v; want %v", tt.spec, tt.dev, got, err, tt.want)
		}
	}
}
