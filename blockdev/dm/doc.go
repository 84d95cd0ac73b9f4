// Package dm drives the kernel's device-mapper through ioctls on
// /dev/mapper/control, without cgo and without libdevmapper.
//
// It covers what an encrypted-volume agent needs: create a device with a
// name and a uuid, load a table (always with DM_SECURE_DATA_FLAG, so the
// kernel wipes its copy of the ioctl buffer and ours), resume, suspend,
// read the table back as the kernel reports it, send target messages
// ("key wipe"), remove (optionally deferred) and list devices.
//
// Device nodes follow libdevmapper's protocol with udev (udev.go), which
// Open detects (UdevMode). Where udev runs with the device-mapper rules
// of the dmsetup package, resume and remove carry libdevmapper's udev
// flags and a cookie naming a SysV semaphore in dm_ioctl.event_nr; udev
// makes /dev/mapper/<name> and the /dev/disk links (and so systemd's
// dev-mapper-<name>.device), its 95-dm-notify.rules decrements the
// semaphore when done, and Resume and Remove return only then, bounded
// by their context and Options.UdevTimeout. Without udev (an initramfs,
// the test VM) nobody creates /dev/mapper/<name>, so the package makes
// and removes that node itself; where udev runs without those rules it
// does the same, and tells any dm rules to keep out of the way.
//
// dm-crypt tables built here never carry a key: the key is referenced in
// the kernel keyring (":64:logon:kmsagent:<name>", see package keyring),
// and LoadTable refuses crypt tables with an inline hex key.
//
// The wire layout follows include/uapi/linux/dm-ioctl.h (interface 4.x);
// the structs are packed and unpacked by hand with fixed offsets rather
// than through unsafe casts, so the layout is explicit and testable.
package dm
