// Package volume performs kmsagent's operations on a LUKS2 volume, a block
// device or an image file: format, unlock through the KMS token, enroll
// and unenroll an existing volume, re-wrap the key and export it.
//
// The KMS token (see package token) names a keyslot whose passphrase is a
// KMS data key bound to the LUKS UUID. The volume key itself never
// changes here: rewrap only rewrites the token, and enroll adds a keyslot
// beside the ones already there, so the data is never touched.
//
// Every operation checks its input (the header, the token, the
// passphrase, the KMS answer) before it writes anything, and commits
// header changes with a single luks2 Header.Write (secondary copy first,
// then the primary), so a refused or failed operation leaves the volume
// as it was. Format is the exception by nature; it refuses a device that
// holds a LUKS header or a file system unless forced.
//
// Before any header write the device is probed (package probe): a LUKS2
// header beside another signature (an LVM2 label, a file system, a RAID
// superblock) or behind a primary header of another version is
// ambiguous, and is refused with an AmbiguousError rather than written,
// since luks2 would rewrite both header copies over the other format.
package volume
