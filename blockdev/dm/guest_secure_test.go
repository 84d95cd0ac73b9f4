package dm

import (
	"bytes"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/blockdev/vmtest"
)

// TestGuestSecureDataWipesBuffer checks, inside the VM, the kernel
// behaviour LoadTable relies on: with DM_SECURE_DATA_FLAG the kernel
// clears the caller's ioctl buffer after copying it in, so the table
// does not stay in our memory, and then writes back only the header.
func TestGuestSecureDataWipesBuffer(t *testing.T) {
	vmtest.RequireGuest(t)
	vmtest.Report(t)
	c, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const name = "secure"
	if _, err := c.Create(name, "", false); err != nil {
		t.Fatal(err)
	}
	defer c.Remove(t.Context(), name, RemoveOptions{})

	for _, secure := range []bool{false, true} {
		payload, err := encodeTargets([]Target{{Length: 8, Type: "linear", Params: "/dev/vdb 0"}})
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, headerSize+len(payload))
		h := header{Version: [3]uint32{requiredMajor, 0, 0}, DataSize: uint32(len(buf)), DataStart: headerSize, TargetCount: 1, Name: name}
		if secure {
			h.Flags = flagSecureData
		}
		if err := h.marshal(buf); err != nil {
			t.Fatal(err)
		}
		copy(buf[headerSize:], payload)
		if errno := ioctl(c.fd, unix.DM_TABLE_LOAD, buf); errno != 0 {
			t.Fatalf("table load (secure %v): %v", secure, errno)
		}
		wiped := bytes.Count(buf[headerSize:], []byte{0}) == len(payload)
		if wiped != secure {
			t.Errorf("secure %v: payload wiped = %v", secure, wiped)
		}
		if reply, err := unmarshalHeader(buf); err != nil || reply.Name != name {
			t.Errorf("secure %v: reply header %+v, %v", secure, reply, err)
		}
	}
}
