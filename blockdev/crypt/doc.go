// Package crypt opens a kmsagent LUKS2 volume as a dm-crypt device, mounts
// its file system if asked, and closes it again.
//
// Open runs the steps in an order that keeps every failure clean:
//
//  1. A regular file is attached to a free loop device (LOOP_CONFIGURE
//     with LO_FLAGS_AUTOCLEAR). Open keeps the loop device open until the
//     device-mapper device holds it, so whatever happens to this process
//     the kernel detaches the loop device once its last user is gone.
//  2. The LUKS2 header is read (no key involved) for the volume's uuid and
//     data segment. A volume that is already open (a device-mapper device
//     with its CRYPT-LUKS2-<uuid>- uuid, ours or cryptsetup's) is reported
//     and not opened twice; so is a name already in use.
//  3. An Unlocker does the part that touches the key: KMS unwrap, keyslot,
//     a logon key on a locked thread's keyring, table load, resume. The
//     agent runs Activate in a short-lived worker process for that; the
//     key never enters the calling process.
//  4. The file system is mounted if a mount point was given.
//
// When a step fails, the steps before it are undone (the device-mapper
// device is deactivated, the loop device released), including when the
// unlocker died half way: Open removes a device left with the volume's
// device-mapper uuid. The error names the step.
//
// The dm-crypt table is the one cryptsetup loads for the same header:
// the segment's cipher, the key as ":<size>:logon:kmsagent:<name>", the
// segment's iv_tweak, the data offset in 512-byte sectors, and for
// segments with sectors above 512 bytes "sector_size:<n>", without
// "iv_large_sectors": LUKS2 IVs count 512-byte units at every sector size.
//
// Close unmounts what is mounted from the device, suspends it, wipes the
// key ("key wipe") and removes it; a device still busy after the unmount
// is marked for deferred removal and reported as such. A loop device the
// agent attached goes away with the device-mapper device (autoclear).
package crypt
