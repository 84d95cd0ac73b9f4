// Package uevent listens to the kernel's device events on a
// NETLINK_KOBJECT_UEVENT socket, so the daemon can unlock a disk when it
// is hot-plugged and notice when it goes away.
//
// # Which events: kernel or udev
//
// Two multicast groups carry events. Group 1 (KernelGroup) has the
// kernel's own messages, sent as soon as a device appears, before udev
// has run its rules: /dev/<name> exists (devtmpfs makes it in the
// kernel), but /dev/disk/by-* links and udev's permissions may not yet.
// Group 2 (UdevGroup) has udevd's re-broadcast of each event after its
// rules ran, in libudev's binary format, with the properties udev added
// (ID_SERIAL, DEVLINKS, ...). The daemon wants to act once links exist,
// so it should listen to udev's events wherever udevd runs and to the
// kernel's where it does not (a busybox VM, an initramfs without udev).
// Listening to both would deliver every event twice, at different
// moments, for no gain. (TestVMUdev runs Debian's udevd in a VM,
// hot-plugs a disk and checks that its by-id link exists when udevd's
// add event arrives.)
//
// The choice is the caller's and explicit: Options.Group has no default.
// DetectGroup suggests one from the presence of udevd's control socket
// (/run/udev/control), which is what libudev-based tools test too. A
// caller that picks UdevGroup depends on udevd staying up: while udevd is
// stopped or restarting, no events arrive on group 2, so the daemon should
// rescan its devices when udevd comes back (or periodically).
//
// # Who may send
//
// Anyone can read these groups, but only the kernel and root should be
// believed. The checks are libudev's (sd-device-monitor.c): every message
// must carry SCM_CREDENTIALS (SO_PASSCRED is set) with uid 0; a message on
// the kernel group must come from netlink port 0, the kernel; unicast
// messages (no group) are refused, since nothing legitimately sends them
// to us; and the format must fit the group: kernel text on group 1,
// libudev's header on group 2. The kernel already refuses sends to these
// groups from processes without CAP_NET_ADMIN; the uid check also stops a
// process that has that capability without being root, and a root process
// in a user namespace (its uid maps to a non-zero uid here). Dropped
// messages are reported to Options.OnDrop, so the daemon can log them, and
// never end Next.
//
// # Lost events
//
// Events are datagrams queued on the socket. When the daemon falls behind
// (a burst at boot, a slow KMS call on the same goroutine) the kernel
// drops messages and reports ENOBUFS on the next receive. Next returns
// ErrEventsLost then, once, and carries on with the messages that follow:
// the caller must rescan (list /sys/class/block) rather than trust its
// view. The receive buffer is set with SO_RCVBUFFORCE (root) to 16 MiB by
// default, room for thousands of events; memory is only used while events
// are queued. Without privilege the kernel caps SO_RCVBUF at
// net.core.rmem_max.
//
// # Parsing
//
// Kernel messages are "ACTION@DEVPATH\0KEY=VALUE\0...". udev messages
// start with a 40-byte header ("libudev\0", magic 0xfeedcafe in network
// order, then header size, properties offset and length in host order,
// then filter hashes this package does not use) followed by the same
// KEY=VALUE list. Both are untrusted bytes until the sender is checked,
// and parsed defensively anyway: bounds, duplicate keys, the properties
// the kernel always sends (ACTION, DEVPATH, SUBSYSTEM, SEQNUM), decimal
// numbers, and a DEVNAME that stays under /dev. udev's absolute DEVNAME
// ("/dev/vdb") is reduced to the kernel's form ("vdb"), so Event.DevName
// means the same whichever group it came from.
//
// # Cancellation
//
// The socket is non-blocking and served by the Go runtime's poller; Next
// waits with a read deadline that a context.AfterFunc moves to the past
// when ctx ends, so cancelling costs no goroutine and none is left
// behind. Close unblocks a waiting Next. A Listener has one reader: Next
// must not be called concurrently.
//
// Filtering (Options.Subsystem, Options.Actions) is done after receipt in
// Go; libudev's BPF filters on the header hashes would save wake-ups, but
// block-device events are rare enough that this does not matter.
package uevent
