// Package source finds the block device that a volume's configured
// source names, at start (Resolve) and when a disk is hot-plugged
// (Matches).
//
// A source is one of:
//
//   - an absolute path: a block device, a regular image file, or a
//     symbolic link to either (/dev/disk/by-id/..., /dev/mapper/...). The
//     link is resolved once, by Resolve, and the target returned, so the
//     caller opens what was checked even if udev later moves the link.
//   - UUID=<uuid>: the UUID in a LUKS2 header, as in crypttab and blkid.
//   - evs:<volume-id>: a Huawei Cloud EVS (or RDS data) disk by its volume
//     id. The hypervisor gives a virtio disk the first 20 characters of
//     the id as its serial number; the last 16 are not on the disk and so
//     cannot be checked.
//
// LABEL=, PARTUUID= and the like are refused by Parse, not ignored.
//
// # sysfs is the source of truth
//
// Both UUID= and evs: are answered from /sys/class/block, which lists
// every disk and partition whether or not udev runs, so the answer is the
// same on a full system, in a busybox VM and in an initramfs. The
// /dev/disk/by-uuid and /dev/disk/by-id links are not consulted: udev
// makes them from the same facts (blkid's probe of the header, the sysfs
// serial attribute), they do not exist without udev, and a by-uuid link
// names one device only when two carry the same UUID (the last one
// probed wins) and mixes LUKS and file-system UUIDs. A disk created from
// a snapshot of another and attached to the same server has the same
// LUKS2 UUID, and opening the wrong one is how a server ends up writing to
// a stale copy; Resolve reads every device and reports that case as
// ErrAmbiguous instead of picking one. The device node returned is
// /dev/<DEVNAME>, with DEVNAME from the device's sysfs uevent file; it is
// checked to be a block device with the device number sysfs gives, so a
// stale static /dev cannot redirect the caller.
//
// UUID= reads the LUKS2 header of each block device with package luks2
// (the same reader that unlocks, so a header it finds is one it can use;
// a damaged primary with a good secondary copy is found, as cryptsetup
// would open it). Devices are opened read-only, never for writing: udev
// watches block devices for close-after-write and would answer each one
// with a change event, which the daemon would answer with another scan.
// Skipped without reading: devices of size 0 (an unattached loop device,
// an empty drive) and suspended device-mapper devices, whose reads would
// block until resume. A device stacked on another whole device with the
// same header (a multipath or dm-linear map on top of its paths) is the
// same volume seen twice; the top of the stack is kept, like
// multipath-aware blkid. A read of a failing disk cannot be interrupted;
// ctx is checked between devices.
//
// evs: compares the serial with the first 20 characters of the id, case
// folded, for:
//
//   - virtio-blk disks (KVM instances): /sys/class/block/<dev>/serial;
//     udev's /dev/disk/by-id/virtio-<serial> is made from this attribute.
//   - SCSI disks whose unit serial number (VPD page 0x80,
//     /sys/class/block/<dev>/device/vpd_pg80) carries the id, as QEMU's
//     scsi-hd does with serial=.
//
// Huawei Cloud's SCSI-mode EVS disks are identified by their WWN, which
// only the EVS API maps to a volume id; they are not found by evs: (use
// UUID= for them). The paths of a multipath SCSI disk all report the
// serial and the map none, so evs: answers ErrAmbiguous there: name the
// map by path. Partitions have no serial: evs: names a whole disk.
//
// Matches with a path source compares device numbers through the path,
// so a /dev/disk link matches only once udev has made it: a daemon that
// takes hot-plug events from the kernel while udevd runs would ask too
// early. Listen to udev's events where udevd runs (package uevent).
//
// TestVMVirtioSerial checks all of this on a real kernel without udev:
// virtio disks with volume ids as serials, a LUKS2 header found by
// scanning, and a disk unplugged and plugged back.
//
// # Errors
//
// Every error but a context's is an *Error naming the source, wrapping
// one of ErrInvalidSpec (fix the configuration), ErrNotFound (normal at
// boot and before hot-plug: retry when a disk appears), ErrAmbiguous
// (more than one device matches; Devices lists them) or
// ErrNotBlockDevice (a path that exists but is a directory, character
// device, ...), or an I/O error.
//
// A Resolver holds only its roots (SysRoot, DevRoot), which tests point
// at a fake tree; the zero Resolver uses /sys and /dev.
package source
