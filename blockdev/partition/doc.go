// Package partition reads and rewrites the partition table of a disk
// image: a GUID partition table (GPT, with its protective MBR) or a plain
// MBR ("dos") table. It exists so that image encrypt can turn one
// partition of a system image into LUKS2 and leave the others (BIOS boot,
// ESP, /boot) as they are.
//
// # Reading
//
// Read trusts nothing in the image: every offset and count is checked
// against the image size before it is used, both GPT headers and their
// entry arrays must pass their CRC32 checks and agree with each other,
// and partitions must lie in the usable area without overlapping. A table
// that fails any check is refused with an error that names it rather than
// repaired: the tool that made the image (sgdisk -v, sfdisk --verify) is
// the place to repair it, and an image kmsagent rewrote from a damaged
// table would carry the damage on with fresh checksums.
//
// The GPT's logical block size is found where its header is (LBA 1 at
// 512 or 4096 bytes); an MBR records none and is read with 512-byte
// sectors. Of an MBR only the four primary slots are read: logical
// partitions inside an extended one are neither listed nor changed.
//
// # Resizing
//
// A partition that becomes LUKS2 grows by the LUKS2 header (16 MiB), and
// nothing else moves: a partition's start is where boot loaders and
// fstab entries (by PARTUUID) find it. Resize therefore grows a partition
// into the unallocated space after it, or, when it is the last partition
// on the disk (a cloud image's root), grows the disk: the usable area
// ends where the partition now ends, and a GPT's backup entry array and
// header move to the new end of the disk. A partition that ended exactly
// at the end of the usable area and shrinks takes the end of the disk
// with it, so that decrypting an encrypted image gives back the original
// layout. Everything that identifies the disk and its partitions (the
// disk GUID or MBR signature, type GUIDs, PARTUUIDs, names, attributes)
// is kept; only the sizes and the checksums change.
package partition
