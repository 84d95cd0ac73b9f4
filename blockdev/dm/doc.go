// Package dm drives the kernel's device-mapper through ioctls on
// /dev/mapper/control, without cgo and without libdevmapper.
//
// It covers what an encrypted-volume agent needs: create a device with a
// name and a uuid, load a table (always with DM_SECURE_DATA_FLAG, so the
// kernel wipes its copy of the ioctl buffer and ours), resume, suspend,
// read the table back as the kernel reports it, send target messages
// ("key wipe"), remove (optionally deferred) and list devices. Without
// udev nobody creates /dev/mapper/<name>, so the package makes and removes
// that node itself when it is missing.
//
// dm-crypt tables built here never carry a key: the key is referenced in
// the kernel keyring (":64:logon:kmsagent:<name>", see package keyring),
// and LoadTable refuses crypt tables with an inline hex key.
//
// The wire layout follows include/uapi/linux/dm-ioctl.h (interface 4.x);
// the structs are packed and unpacked by hand with fixed offsets rather
// than through unsafe casts, so the layout is explicit and testable.
package dm
