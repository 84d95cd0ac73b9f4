package luks2

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
)

// Defaults for new keyslots, as cryptsetup 2.x makes them.
const (
	keyslotEncryption = "aes-xts-plain64"
	keyslotKeySize    = 64 // AES-256 in XTS takes two keys
	afHash            = "sha256"
	areaAlign         = 4096
)

// OpenKeyslot derives the keyslot key from the passphrase, decrypts the
// keyslot area read from dev, merges the split and checks the result
// against the keyslot's digest. A passphrase that does not fit gives
// ErrWrongPassphrase. Only keyslots bound to the data segment are opened,
// as cryptsetup does: an unbound one gives ErrUnboundKeyslot, since the
// key it holds is not the volume key.
func (h *Header) OpenKeyslot(dev io.ReaderAt, slot int, passphrase []byte) (*secret.Key, error) {
	p, err := h.PrepareKeyslot(dev, slot, 0)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.Open(passphrase)
}

// openKeyslot opens a keyslot whether or not it is bound to the data
// segment; the key is checked against the keyslot's own digest.
func (h *Header) openKeyslot(dev io.ReaderAt, slot int, passphrase []byte) (*secret.Key, error) {
	p, err := h.prepareKeyslot(dev, slot, 0, prefetchMax)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.Open(passphrase)
}

// PreparedKeyslot is a keyslot made ready to open before its passphrase
// is known: the area is read and the locked memory the opening needs is
// mapped. An unlock through the KMS does this while the KMS request is in
// flight, so that once the passphrase arrives only the key derivation,
// the decryption, the anti-forensic merge and the digest check remain:
// a boot unlocks many volumes at once, and their replies come back
// together.
type PreparedKeyslot struct {
	slot int
	ks   *keyslot
	d    *digest
	// ct holds the first prefetchMax bytes of the area's ciphertext
	// (a 512-bit key's split is 250 KiB); Open reads the rest into ct,
	// a piece at a time.
	ct  []byte
	dev io.ReaderAt
	// work holds, in one locked mapping, the volume key being merged,
	// the key derived from the passphrase, a decrypted chunk of the
	// area, a stripe cut by the chunk's end and room for the caller's
	// passphrase. Open hands it on as the volume key, cut to its first
	// part (secret.Key.Truncate): one mapping per unlock.
	work    *secret.Key
	passLen int
	used    bool
}

// prefetchMax is how much of the area PrepareKeyslot reads; the rest
// is only announced to the kernel (POSIX_FADV_WILLNEED), so that a cold
// disk reads it while the KMS request is in flight and Open finds it in
// the page cache. Reading all of it ahead into the heap cost more CPU
// than it moved out of the way: 250 KiB of fresh heap per unlock is
// page faults and collector work, dearer than the copies.
const prefetchMax = 32 << 10

// willNeed tells the kernel that [off, off+n) of dev will be read soon,
// when dev is a file; it is only a hint, so errors are ignored.
func willNeed(dev io.ReaderAt, off, n int64) {
	f, ok := dev.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.Fadvise(int(fd), off, n, unix.FADV_WILLNEED)
	})
}

// PrepareKeyslot reads the area of a keyslot bound to the data segment
// and maps the memory to open it (see PreparedKeyslot), with room for a
// passphrase of passLen bytes (PassphraseBuffer); it fails where
// OpenKeyslot would fail before looking at the passphrase. The caller
// calls Open once, and Close.
func (h *Header) PrepareKeyslot(dev io.ReaderAt, slot, passLen int) (*PreparedKeyslot, error) {
	if err := h.reencrypting(); err != nil {
		return nil, err
	}
	if _, ok := h.meta.keyslots[slot]; ok && !h.meta.bound(slot) {
		return nil, fmt.Errorf("%w: keyslot %d", ErrUnboundKeyslot, slot)
	}
	return h.prepareKeyslot(dev, slot, passLen, prefetchMax)
}

// prepareKeyslot reads at most prefetch bytes of the area ahead.
func (h *Header) prepareKeyslot(dev io.ReaderAt, slot, passLen, prefetch int) (*PreparedKeyslot, error) {
	if passLen < 0 || passLen > maxPassphraseRoom {
		return nil, fmt.Errorf("luks2: passphrase room of %d bytes", passLen)
	}
	ks, ok := h.meta.keyslots[slot]
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrNoSuchKeyslot, slot)
	}
	if ks.typ != "luks2" {
		return nil, fmt.Errorf("%w: keyslot %d has type %q", ErrUnsupported, slot, ks.typ)
	}
	d, ok := h.meta.digestOf(slot)
	if !ok {
		return nil, fmt.Errorf("%w: keyslot %d has no digest", ErrInvalidHeader, slot)
	}
	if _, err := hashByName(ks.af.hash); err != nil {
		return nil, fmt.Errorf("%w: keyslot %d: %v", ErrUnsupported, slot, err)
	}
	size := int(afSectors(ks.keySize, ks.af.stripes)) * sectorSize
	ct := make([]byte, min(size, prefetch))
	if _, err := dev.ReadAt(ct, int64(ks.area.offset)); err != nil {
		return nil, fmt.Errorf("luks2: keyslot %d: read area: %w", slot, err)
	}
	if len(ct) < size {
		willNeed(dev, int64(ks.area.offset)+int64(len(ct)), int64(size-len(ct)))
	}
	work, err := secret.New(ks.keySize + ks.area.keySize + areaChunk + ks.keySize + passLen)
	if err != nil {
		return nil, err
	}
	return &PreparedKeyslot{slot: slot, ks: ks, d: d, ct: ct, dev: dev, work: work, passLen: passLen}, nil
}

// maxPassphraseRoom bounds PrepareKeyslot's passLen: cryptsetup reads
// passphrases of at most 8 MiB, a KMS data key's encoding is 44 bytes.
const maxPassphraseRoom = 1 << 20

// PassphraseBuffer is the room for a passphrase asked for by
// PrepareKeyslot, in the keyslot's locked memory: a caller that builds
// the passphrase (from a KMS data key, say) writes it here and passes it
// to Open, and needs no locked mapping of its own. Close wipes it.
func (p *PreparedKeyslot) PassphraseBuffer() []byte {
	if p.work == nil {
		return nil // opened: the memory is the volume key's now
	}
	w := p.work.Bytes()
	return w[len(w)-p.passLen:]
}

// Open derives the keyslot key from the passphrase, decrypts the area,
// merges the split and checks the result against the keyslot's digest;
// a passphrase that does not fit gives ErrWrongPassphrase. It returns
// the volume key, which the caller wipes; it may be called only once.
func (p *PreparedKeyslot) Open(passphrase []byte) (*secret.Key, error) {
	if p.used || p.work == nil {
		return nil, errors.New("luks2: prepared keyslot opened twice or after Close")
	}
	p.used = true
	ks, slot := p.ks, p.slot
	w := p.work.Bytes()
	vk, w := w[:ks.keySize], w[ks.keySize:]
	key, w := w[:ks.area.keySize], w[ks.area.keySize:]
	chunk, carry := w[:areaChunk], w[areaChunk:areaChunk+ks.keySize]
	if err := ks.kdf.deriveInto(key, passphrase, ks.salt); err != nil {
		return nil, fmt.Errorf("luks2: keyslot %d: %w", slot, err)
	}
	c, err := newAreaCipher(ks.area.encryption, key)
	if err != nil {
		return nil, fmt.Errorf("luks2: keyslot %d: %w", slot, err)
	}
	defer c.wipe()
	if err := mergeArea(p.dev, c, ks, p.ct, chunk, carry, vk); err != nil {
		return nil, fmt.Errorf("luks2: keyslot %d: %w", slot, err)
	}
	match, err := p.d.verify(vk)
	if err != nil {
		return nil, fmt.Errorf("luks2: keyslot %d: %w", slot, err)
	}
	if !match {
		return nil, fmt.Errorf("%w (keyslot %d)", ErrWrongPassphrase, slot)
	}
	out := p.work
	p.work = nil
	out.Truncate(ks.keySize) // zeroes the derived key, scratch and passphrase
	return out, nil
}

// Close wipes and releases what the keyslot holds unless Open returned
// it as the volume key: the derived key, the merge's scratch, the
// passphrase room and the volume key.
func (p *PreparedKeyslot) Close() {
	p.work.Wipe()
	p.work = nil
}

// areaChunk is how much of a keyslot area an unlock decrypts at a time:
// the plaintext split is key material and lives in locked memory, and
// a page of it is enough, where the whole of a 512-bit key's split would
// be 250 KiB to lock.
const areaChunk = 4096

// mergeArea decrypts the keyslot area of ks, whose first len(ct) bytes
// are in ct and the rest on dev, a chunk at a time into chunk (locked
// memory), and merges the split into vk; carry is scratch of len(vk)
// bytes in locked memory.
func mergeArea(dev io.ReaderAt, c sectorCipher, ks *keyslot, ct, chunk, carry, vk []byte) error {
	m, err := newAFMerger(vk, carry, ks.af.stripes, ks.af.hash)
	if err != nil {
		return err
	}
	defer m.wipe()
	size := int(afSectors(ks.keySize, ks.af.stripes)) * sectorSize
	for off := 0; off < size; {
		rd := ct
		if off > 0 {
			// Past the prefetched part: read the rest into the same
			// buffer, a piece at a time.
			rd = ct[:min(len(ct), size-off)]
			if _, err := dev.ReadAt(rd, int64(ks.area.offset)+int64(off)); err != nil {
				return fmt.Errorf("read area: %w", err)
			}
		}
		for len(rd) > 0 {
			pt := chunk[:min(len(chunk), len(rd))]
			for s := 0; s < len(pt); s += sectorSize {
				c.decryptSector(pt[s:s+sectorSize], rd[s:s+sectorSize], uint64((off+s)/sectorSize))
			}
			m.write(pt)
			rd = rd[len(pt):]
			off += len(pt)
		}
	}
	clear(chunk)
	if !m.complete() {
		return fmt.Errorf("%w: area holds fewer than %d stripes", ErrInvalidHeader, ks.af.stripes)
	}
	return nil
}

// OpenAny tries the passphrase on every luks2 keyslot bound to the data
// segment as cryptsetup does: "prefer" priority first, then "normal";
// "ignore" keyslots are skipped. It returns the volume key and the
// keyslot that opened.
//
// When no such keyslot opens, the unbound keyslots are tried too, only to
// say why: a passphrase that opens one gets an error that is both
// ErrWrongPassphrase and ErrUnboundKeyslot and names the keyslot, rather
// than a bare "wrong passphrase" for a passphrase its owner knows is
// right.
func (h *Header) OpenAny(dev io.ReaderAt, passphrase []byte) (*secret.Key, int, error) {
	if err := h.reencrypting(); err != nil {
		return nil, -1, err
	}
	var order, unbound []int
	for _, prio := range []int{2, 1} {
		for _, id := range sortedKeys(h.meta.keyslots) {
			ks := h.meta.keyslots[id]
			switch {
			case ks.typ != "luks2" || ks.priority != prio:
			case h.meta.bound(id):
				order = append(order, id)
			default:
				unbound = append(unbound, id)
			}
		}
	}
	if len(order) == 0 && len(unbound) == 0 {
		return nil, -1, fmt.Errorf("%w: no usable keyslot", ErrNoSuchKeyslot)
	}
	var errs []error
	for _, id := range order {
		vk, err := h.OpenKeyslot(dev, id, passphrase)
		if err == nil {
			return vk, id, nil
		}
		if !errors.Is(err, ErrWrongPassphrase) {
			errs = append(errs, err)
		}
	}
	for _, id := range unbound {
		if vk, err := h.openKeyslot(dev, id, passphrase); err == nil {
			vk.Wipe()
			return nil, -1, &unboundError{slot: id}
		}
	}
	if len(errs) == 0 {
		return nil, -1, ErrWrongPassphrase
	}
	// Some keyslot could not even be tried; the passphrase may be its.
	return nil, -1, fmt.Errorf("%w; keyslots that failed otherwise: %w", ErrWrongPassphrase, errors.Join(errs...))
}

// reencrypting fails with ErrUnsupported while an online reencryption is
// in progress (the header has a reencrypt keyslot): the data is partly
// in the old layout and key (or plaintext) and partly in the new, so no
// single key reads it, and this package does not reencrypt.
func (h *Header) reencrypting() error {
	for _, id := range sortedKeys(h.meta.keyslots) {
		if h.meta.keyslots[id].typ == "reencrypt" {
			return fmt.Errorf("%w: keyslot %d is a reencrypt keyslot: a reencryption is in progress, with the data partly in the old layout and key and partly in the new; finish it with cryptsetup first",
				ErrUnsupported, id)
		}
	}
	return nil
}

// unboundError says that a passphrase opens only an unbound keyslot.
type unboundError struct{ slot int }

func (e *unboundError) Error() string {
	return fmt.Sprintf("luks2: the passphrase opens only keyslot %d, which is unbound (not assigned to the data segment): its key is not the volume key", e.slot)
}

func (e *unboundError) Is(target error) bool {
	return target == ErrUnboundKeyslot || target == ErrWrongPassphrase
}

// AddKeyslot stores the volume key under a passphrase in the lowest free
// keyslot: the key is split into 4000 anti-forensic stripes, encrypted
// with aes-xts-plain64 under a key derived by kdf, and written to a free
// part of the keyslot area on dev (then synced). The header is changed in
// memory only; Write commits it, which lets a caller add a token for the
// new keyslot in the same commit. Until then the new area is unused space.
func (h *Header) AddKeyslot(dev WriterAtSyncer, vk *secret.Key, passphrase []byte, kdf KDF) (int, error) {
	if err := h.checkWritable(); err != nil {
		return -1, err
	}
	if err := kdf.checkNew(); err != nil {
		return -1, err
	}
	dig, err := h.VerifyVolumeKey(vk)
	if err != nil {
		return -1, err
	}
	slot := -1
	for id := 0; id < MaxKeyslots; id++ {
		if _, used := h.meta.keyslots[id]; !used {
			slot = id
			break
		}
	}
	if slot < 0 {
		return -1, ErrNoFreeKeyslot
	}
	areaSize := roundUp(uint64(vk.Len())*stripes, areaAlign)
	offset, err := h.findArea(areaSize)
	if err != nil {
		return -1, err
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return -1, fmt.Errorf("luks2: keyslot salt: %w", err)
	}

	// Build and validate the new metadata before writing anything, so a
	// full JSON area is found out before the keyslot area is touched.
	root, err := h.withKeyslot(slot, dig, vk.Len(), offset, areaSize, kdf, salt)
	if err != nil {
		return -1, err
	}
	m, err := parseRoot(root)
	if err == nil {
		err = m.validate(h.hdrSize)
	}
	if err != nil {
		return -1, fmt.Errorf("luks2: new keyslot %d: %w", slot, err)
	}

	key, err := kdf.derive(passphrase, salt, keyslotKeySize)
	if err != nil {
		return -1, err
	}
	defer key.Wipe()
	c, err := newAreaCipher(keyslotEncryption, key.Bytes())
	if err != nil {
		return -1, err
	}
	defer c.wipe()
	split, err := secret.New(int(afSectors(vk.Len(), stripes)) * sectorSize)
	if err != nil {
		return -1, err
	}
	defer split.Wipe()
	if err := afSplit(split.Bytes(), vk.Bytes(), stripes, afHash); err != nil {
		return -1, err
	}
	cryptArea(c, split.Bytes(), true)
	if _, err := dev.WriteAt(split.Bytes(), int64(offset)); err != nil {
		return -1, fmt.Errorf("luks2: write keyslot %d area: %w", slot, err)
	}
	if err := dev.Sync(); err != nil {
		return -1, fmt.Errorf("luks2: sync keyslot %d area: %w", slot, err)
	}
	h.meta = m
	return slot, nil
}

// withKeyslot returns the JSON tree with a new luks2 keyslot added and
// assigned to digest dig. Members are in cryptsetup's order.
func (h *Header) withKeyslot(slot, dig, keySize int, offset, size uint64, kdf KDF, salt []byte) (*object, error) {
	af := &object{}
	af.set("type", encodeValue("luks1"))
	af.set("stripes", encodeValue(stripes))
	af.set("hash", encodeValue(afHash))
	ar := &object{}
	ar.set("type", encodeValue("raw"))
	ar.set("offset", encodeValue(strconv.FormatUint(offset, 10)))
	ar.set("size", encodeValue(strconv.FormatUint(size, 10)))
	ar.set("encryption", encodeValue(keyslotEncryption))
	ar.set("key_size", encodeValue(keyslotKeySize))
	kd := &object{}
	kd.set("type", encodeValue(kdf.Type))
	if kdf.Type == KDFPBKDF2 {
		kd.set("hash", encodeValue(kdf.Hash))
		kd.set("iterations", encodeValue(kdf.Iterations))
	} else {
		kd.set("time", encodeValue(kdf.Time))
		kd.set("memory", encodeValue(kdf.MemoryKiB))
		kd.set("cpus", encodeValue(kdf.CPUs))
	}
	kd.set("salt", encodeValue(base64.StdEncoding.EncodeToString(salt)))
	ks := &object{}
	ks.set("type", encodeValue("luks2"))
	ks.set("key_size", encodeValue(keySize))
	ks.set("af", af.marshal())
	ks.set("area", ar.marshal())
	ks.set("kdf", kd.marshal())

	keyslots, err := h.meta.section("keyslots")
	if err != nil {
		return nil, err
	}
	keyslots.set(strconv.Itoa(slot), ks.marshal())
	sortMembers(keyslots)
	digests, err := h.meta.section("digests")
	if err != nil {
		return nil, err
	}
	d := h.meta.digests[dig]
	if err := setIDList(digests, dig, "keyslots", append(slices.Clone(d.keyslots), slot)); err != nil {
		return nil, err
	}
	root := h.meta.root.clone()
	root.set("keyslots", keyslots.marshal())
	root.set("digests", digests.marshal())
	return root, nil
}

// setIDList replaces the keyslots (or segments) array of member id of a
// section, keeping the member's other fields as they are.
func setIDList(section *object, id int, field string, ids []int) error {
	key := strconv.Itoa(id)
	raw, ok := section.get(key)
	if !ok {
		return fmt.Errorf("%w: %d missing", ErrInvalidHeader, id)
	}
	o, err := parseObject(raw, key)
	if err != nil {
		return err
	}
	sort.Ints(ids)
	o.set(field, encodeValue(idStrings(ids)))
	section.set(key, o.marshal())
	return nil
}

// sortMembers orders a section's members by numeric id, as json-c's
// ordered insertion would leave a freshly written cryptsetup header.
func sortMembers(o *object) {
	sort.SliceStable(o.members, func(i, j int) bool {
		a, _ := strconv.Atoi(o.members[i].key)
		b, _ := strconv.Atoi(o.members[j].key)
		return a < b
	})
}

// findArea returns the lowest offset in the keyslot area with size free
// bytes, aligned to 4 KiB.
func (h *Header) findArea(size uint64) (uint64, error) {
	start := 2 * h.hdrSize
	end := start + h.meta.config.keyslotsSize
	var used []interval
	for _, ks := range h.meta.keyslots {
		used = append(used, interval{offset: ks.area.offset, size: ks.area.size})
	}
	sort.Slice(used, func(i, j int) bool { return used[i].offset < used[j].offset })
	off := roundUp(start, areaAlign)
	for _, u := range used {
		if off+size <= u.offset {
			break
		}
		off = max(off, roundUp(u.end(), areaAlign))
	}
	if off+size > end {
		return 0, fmt.Errorf("%w: no free %d bytes in the keyslot area", ErrNoSpace, size)
	}
	return off, nil
}

func roundUp(n, align uint64) uint64 {
	return (n + align - 1) / align * align
}

// RemoveKeyslot destroys a keyslot as cryptsetup does: its area on dev is
// overwritten with random data and synced first, then the keyslot and all
// references to it (digests, tokens) are removed and the header is
// committed with Write, together with any other pending change. The
// header must be committed here because the key material is already gone.
// Removing the last keyslot is allowed; the caller decides whether that
// is wanted.
func (h *Header) RemoveKeyslot(dev WriterAtSyncer, slot int) error {
	if err := h.checkWritable(); err != nil {
		return err
	}
	ks, ok := h.meta.keyslots[slot]
	if !ok {
		return fmt.Errorf("%w: %d", ErrNoSuchKeyslot, slot)
	}
	root, err := h.withoutKeyslot(slot)
	if err != nil {
		return err
	}
	m, err := parseRoot(root)
	if err == nil {
		err = m.validate(h.hdrSize)
	}
	if err != nil {
		return fmt.Errorf("luks2: remove keyslot %d: %w", slot, err)
	}
	if err := wipeRandom(dev, ks.area.offset, ks.area.size); err != nil {
		return fmt.Errorf("luks2: wipe keyslot %d area: %w", slot, err)
	}
	old := h.meta
	h.meta = m
	if err := h.Write(dev); err != nil {
		h.meta = old
		return err
	}
	return nil
}

// withoutKeyslot returns the JSON tree without keyslot slot and without
// references to it in digests and tokens; digests left with neither
// keyslots nor segments go too, as cryptsetup drops unused digests.
func (h *Header) withoutKeyslot(slot int) (*object, error) {
	root := h.meta.root.clone()
	keyslots, err := h.meta.section("keyslots")
	if err != nil {
		return nil, err
	}
	keyslots.del(strconv.Itoa(slot))
	root.set("keyslots", keyslots.marshal())

	digests, err := h.meta.section("digests")
	if err != nil {
		return nil, err
	}
	for _, id := range sortedKeys(h.meta.digests) {
		d := h.meta.digests[id]
		if !slices.Contains(d.keyslots, slot) {
			continue
		}
		rest := slices.DeleteFunc(slices.Clone(d.keyslots), func(k int) bool { return k == slot })
		if len(rest) == 0 && len(d.segments) == 0 {
			digests.del(strconv.Itoa(id))
			continue
		}
		if err := setIDList(digests, id, "keyslots", rest); err != nil {
			return nil, err
		}
	}
	root.set("digests", digests.marshal())

	tokens, err := h.meta.section("tokens")
	if err != nil {
		return nil, err
	}
	for _, id := range sortedKeys(h.meta.tokens) {
		t := h.meta.tokens[id]
		if !slices.Contains(t.keyslots, slot) {
			continue
		}
		rest := slices.DeleteFunc(slices.Clone(t.keyslots), func(k int) bool { return k == slot })
		if err := setIDList(tokens, id, "keyslots", rest); err != nil {
			return nil, err
		}
	}
	root.set("tokens", tokens.marshal())
	return root, nil
}

// wipeRandom overwrites [offset, offset+size) with random data and syncs.
// The bytes are an AES-256-CTR keystream under a fresh key from
// crypto/rand: unpredictable to anyone without that key, which is dropped
// at once, and made at memory speed. They hide which parts of the keyslot
// area have held key material; the key material itself (AddKeyslot) comes
// from crypto/rand directly. getrandom(2) made a 16 MiB area the largest
// cost of creating an image.
func wipeRandom(dev WriterAtSyncer, offset, size uint64) error {
	const chunk = 1 << 20
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return err
	}
	block, err := aes.NewCipher(key[:])
	clear(key[:])
	if err != nil {
		return err
	}
	stream := cipher.NewCTR(block, make([]byte, aes.BlockSize))
	buf := make([]byte, min(size, chunk))
	for done := uint64(0); done < size; {
		n := min(size-done, uint64(len(buf)))
		clear(buf[:n])
		stream.XORKeyStream(buf[:n], buf[:n])
		if _, err := dev.WriteAt(buf[:n], int64(offset+done)); err != nil {
			return err
		}
		done += n
	}
	return dev.Sync()
}
