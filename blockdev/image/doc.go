// Package image is kmsagent's offline image tool: it turns a raw disk
// image into a LUKS2 image whose payload is the input encrypted with
// aes-xts-plain64 (and back), and describes an image's header. It needs
// neither root nor device-mapper.
//
// # Layout
//
// An image is what cryptsetup luksFormat would leave on a device of the
// same size, followed by the data written through dm-crypt: the 16 MiB
// LUKS2 header (two metadata copies and the keyslot area) with a KMS
// keyslot and its kmsagent token, then the payload, padded to whole
// sectors. A kmsagent-image token records the input size, so decrypt
// gives back exactly the input; the segment itself runs to the end of the
// image ("dynamic"), as cryptsetup makes it.
//
// # IVs
//
// dm-crypt's plain64 IV is a sector number, and for LUKS2 that number is
// always counted in 512-byte units, whatever the encryption sector size:
// cryptsetup's LUKS2_activate (lib/luks2/luks2_json_metadata.c) never sets
// CRYPT_ACTIVATE_IV_LARGE_SECTORS, which only plain mode (--iv-large-
// sectors) and BitLocker use, so the kernel target gets no
// iv_large_sectors option. A 4096-byte sector k of the payload is
// therefore encrypted as one XTS data unit with tweak 8k (+ the segment's
// iv_tweak, always 0 in headers cryptsetup writes outside a reencryption).
// TestCryptsetupOfflineEncrypt checks this against cryptsetup's own
// encryption.
//
// # Sector size
//
// The encryption sector size is the logical block size of the device
// dm-crypt makes, and a file system cannot be mounted from a device whose
// blocks are larger than its own: an ext4 made with 1024-byte blocks (what
// mkfs picks for small file systems) on 4096-byte sectors fails with "bad
// block size 1024". Encrypt therefore looks at the start of the input
// (package probe) before anything is written: without an explicit sector
// size it takes 4096 unless the file system or partition table there
// needs 512, and an explicit size the content cannot use is refused with
// a SectorSizeError. cryptsetup 2.6's reencrypt --encrypt, the in-place
// counterpart of encrypt, refuses the same ("Requested --sector-size 4096
// is incompatible with ext4 superblock (block size: 1024 bytes)").
//
// # Partitions
//
// A system disk image (BIOS boot, ESP, /boot, root) gets one partition
// encrypted (EncryptPartition): the partition holds what Encrypt would
// make of its contents alone, with the LUKS2 header at the partition's
// start, and the rest of the disk is copied as it is, holes kept. The
// partition grows by the header as package partition arranges, so the
// output is written anew rather than changed in place, and a failure
// leaves the input untouched. A system that boots the image finds the
// LUKS2 volume on the partition's device, by the same PARTUUID.
//
// # Speed
//
// The floor is a copy: one read and one write of every byte (cp). Each of
// GOMAXPROCS workers takes the next 1 MiB chunk, reads it into its own
// buffer, encrypts it in place and writes it at its offset, so the bytes
// stay in that core's cache between the steps and the cores need no
// hand-over; streams (a pipe in, or out) are read or written in chunk
// order under a lock (transfer.go). The encrypt core (EncryptAt) takes a
// reader and a writer by offset, with the image's place in the output,
// so that an image can be written inside a larger one.
//
// The 16 MiB header region is built in memory (huge pages where the
// kernel gives them) and its keyslot area is filled from an AES-CTR
// keystream rather than getrandom; both were most of the cost of a small
// image. A file output is preallocated (a full disk fails at once) and
// synced once, at the end.
//
// # Holes
//
// A hole in the input reads as zeros, and zeros must be encrypted like
// any data: a hole left in the image would decrypt to noise. Encrypt
// therefore only skips reading whole chunks that SEEK_HOLE reports as
// holes; the image is never sparse. Decrypt into a file does not write
// chunks that decrypt to zeros, so the holes of the original come back.
package image
