package uevent

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	base := []string{"SUBSYSTEM=block", "SEQNUM=4711"}
	withDev := append([]string{"MAJOR=7", "MINOR=8", "DEVNAME=loop8", "DEVTYPE=disk"}, base...)
	corrupt := func(msg []byte, f func([]byte)) []byte { f(msg); return msg }
	tests := []struct {
		name    string
		msg     []byte
		want    Event // Env not compared
		wantErr bool
	}{
		{
			name: "kernel add",
			msg:  kernelMsg("add", "/devices/virtual/block/loop8", withDev...),
			want: Event{Action: ActionAdd, DevPath: "/devices/virtual/block/loop8", Subsystem: "block",
				DevName: "loop8", DevType: "disk", Major: 7, Minor: 8, Seqnum: 4711},
		},
		{
			name: "udev add, absolute DEVNAME reduced",
			msg: udevMsg("ACTION=add", "DEVPATH=/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb",
				"SUBSYSTEM=block", "SEQNUM=12", "MAJOR=253", "MINOR=16", "DEVNAME=/dev/vdb", "DEVTYPE=disk",
				"ID_SERIAL=0b7c6b2e-7a5d-4c4e-8"),
			want: Event{Action: ActionAdd, DevPath: "/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb",
				Subsystem: "block", DevName: "vdb", DevType: "disk", Major: 253, Minor: 16, Seqnum: 12, FromUdev: true},
		},
		{
			name: "kernel event without a device number",
			msg:  kernelMsg("change", "/devices/system/cpu/cpu0", "SUBSYSTEM=cpu", "SEQNUM=1"),
			want: Event{Action: ActionChange, DevPath: "/devices/system/cpu/cpu0", Subsystem: "cpu", Seqnum: 1},
		},
		{
			name: "name in a subdirectory of /dev",
			msg:  kernelMsg("add", "/devices/x/block/cciss!c0d0", "SUBSYSTEM=block", "SEQNUM=1", "DEVNAME=cciss/c0d0"),
			want: Event{Action: ActionAdd, DevPath: "/devices/x/block/cciss!c0d0", Subsystem: "block", DevName: "cciss/c0d0", Seqnum: 1},
		},
		{name: "empty", msg: nil, wantErr: true},
		{name: "no header NUL", msg: []byte("add@/devices/x"), wantErr: true},
		{name: "header without @", msg: []byte("add/devices/x\x00ACTION=add\x00"), wantErr: true},
		{name: "header disagrees", msg: append([]byte("remove@/devices/x\x00"), props("ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=block", "SEQNUM=1")...), wantErr: true},
		{name: "no SEQNUM", msg: kernelMsg("add", "/devices/x", "SUBSYSTEM=block"), wantErr: true},
		{name: "no SUBSYSTEM", msg: kernelMsg("add", "/devices/x", "SEQNUM=1"), wantErr: true},
		{name: "SEQNUM not decimal", msg: kernelMsg("add", "/devices/x", "SUBSYSTEM=block", "SEQNUM=0x10"), wantErr: true},
		{name: "MAJOR without MINOR", msg: kernelMsg("add", "/devices/x", append([]string{"MAJOR=7"}, base...)...), wantErr: true},
		{name: "MINOR too big", msg: kernelMsg("add", "/devices/x", append([]string{"MAJOR=7", "MINOR=4294967296"}, base...)...), wantErr: true},
		{name: "duplicate key", msg: kernelMsg("add", "/devices/x", append([]string{"DEVNAME=a", "DEVNAME=b"}, base...)...), wantErr: true},
		{name: "property without =", msg: kernelMsg("add", "/devices/x", append([]string{"JUNK"}, base...)...), wantErr: true},
		{name: "DEVNAME escapes /dev", msg: kernelMsg("add", "/devices/x", append([]string{"DEVNAME=../etc/shadow"}, base...)...), wantErr: true},
		{name: "DEVNAME not clean", msg: kernelMsg("add", "/devices/x", append([]string{"DEVNAME=a/../../b"}, base...)...), wantErr: true},
		{name: "DEVNAME dot", msg: kernelMsg("add", "/devices/x", append([]string{"DEVNAME=."}, base...)...), wantErr: true},
		{name: "udev DEVNAME outside /dev", msg: udevMsg("ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=block", "SEQNUM=1", "DEVNAME=/etc/vdb"), wantErr: true},
		{name: "udev short header", msg: []byte("libudev\x00\xfe\xed\xca\xfe"), wantErr: true},
		{
			name: "udev bad magic",
			msg: corrupt(udevMsg("ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=block", "SEQNUM=1"),
				func(b []byte) { b[8] = 0 }),
			wantErr: true,
		},
		{
			name: "udev properties past the end",
			msg: corrupt(udevMsg("ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=block", "SEQNUM=1"),
				func(b []byte) { binary.NativeEndian.PutUint32(b[20:], 1<<31) }),
			wantErr: true,
		},
		{
			name: "udev properties offset wraps",
			msg: corrupt(udevMsg("ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=block", "SEQNUM=1"),
				func(b []byte) { binary.NativeEndian.PutUint32(b[16:], 0xffffffff) }),
			wantErr: true,
		},
		{
			name: "udev properties inside the header",
			msg: corrupt(udevMsg("ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=block", "SEQNUM=1"),
				func(b []byte) { binary.NativeEndian.PutUint32(b[16:], 8) }),
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.msg)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse = %+v, %v; want ErrMalformed", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Env["SEQNUM"] == "" {
				t.Errorf("Env lacks SEQNUM: %v", got.Env)
			}
			got.Env = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(kernelMsg("add", "/devices/virtual/block/loop8", "SUBSYSTEM=block", "SEQNUM=1", "MAJOR=7", "MINOR=8", "DEVNAME=loop8"))
	f.Add(udevMsg("ACTION=remove", "DEVPATH=/devices/x/block/vdb", "SUBSYSTEM=block", "SEQNUM=9", "DEVNAME=/dev/vdb"))
	f.Add([]byte("libudev\x00"))
	f.Add([]byte("add@/\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, msg []byte) {
		ev, err := Parse(msg)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if ev.Action == "" || ev.Subsystem == "" || ev.DevPath == "" || ev.DevPath[0] != '/' {
			t.Fatalf("accepted an event without its required fields: %+v", ev)
		}
		if n := ev.DevName; n != "" {
			if _, err := devName(n); err != nil {
				t.Fatalf("DevName %q is not clean: %v", n, err)
			}
		}
	})
}
