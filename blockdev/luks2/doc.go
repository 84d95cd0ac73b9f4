// Package luks2 reads and writes LUKS2 headers as cryptsetup lays them out
// (docs/on-disk-format-luks2 in the cryptsetup project), in pure Go.
//
// A LUKS2 device starts with two copies of the metadata, each a 4096-byte
// binary header followed by a JSON area, then the binary keyslot area that
// holds the anti-forensic split, encrypted copies of the volume key, then
// the encrypted data segment. Read picks the valid copy with the highest
// sequence id and falls back to the secondary copy when the primary is
// damaged; Write puts both copies back, secondary first, each synced
// before the next, so a crash leaves at least one valid copy.
//
// The JSON metadata is kept as the bytes it was read from, member order
// included, and only the members an operation changes are re-encoded:
// tokens of types this package does not know and unknown members of
// keyslots, segments and digests survive a round trip. Every change is
// validated with the same rules as a header that is read, which follow
// cryptsetup's validator.
//
// Only keyslots bound to the data segment (their digest lists segment 0)
// are opened, as cryptsetup opens them: an unbound keyslot (luksAddKey
// --unbound) holds a key of its own, which must never be taken for the
// volume key. A header in the middle of an online reencryption (a
// reencrypt keyslot) is read but never opened, since its data is partly
// under each of two keys; and a data segment that starts inside the
// header, which the validator allows for a detached header, is refused by
// Segment and CheckAttached, as cryptsetup refuses to activate it.
//
// The validator is cryptsetup's, with json-c's nesting limit and its
// refusal of empty strings. It is stricter in one place: a segment whose
// offset plus size wraps 64 bits is refused, where cryptsetup only
// compares segments with each other. Offsets and sizes are uint64
// throughout; callers compare them against device sizes without
// converting them to int64.
//
// Operations that touch the binary keyslot area (AddKeyslot, RemoveKeyslot)
// take the device; all other changes are made in memory and committed by
// Write.
package luks2
