package luks2

import (
	"crypto/rand"
	"fmt"
	"strconv"

	"kmsagent/agent/secret"
	"kmsagent/agent/uuid"
)

// FormatOptions are the parameters of a new header. Zero values take
// cryptsetup 2.x's defaults.
type FormatOptions struct {
	UUID      string // default: a new random UUID
	Label     string // at most 47 bytes
	Subsystem string // at most 47 bytes
	// MetadataSize is the size of one metadata copy, one of 16 KiB, 32 KiB,
	// ... 4 MiB. Default 16 KiB.
	MetadataSize uint64
	// DataOffset is where the encrypted data starts, in bytes, a multiple
	// of 4096. Default 16 MiB.
	DataOffset uint64
	// KeyslotsSize is the size of the binary keyslot area. Default: all
	// the space between the metadata and the data, up to 128 MiB.
	KeyslotsSize uint64
	// Cipher is the dm-crypt cipher spec of the data. Default
	// aes-xts-plain64.
	Cipher string
	// KeySize is the volume key size in bytes. Default 64 (AES-256-XTS).
	KeySize int
	// SectorSize is the data encryption sector size, 512 to 4096.
	// Default 512.
	SectorSize int
	// DigestHash and DigestIterations parameterise the pbkdf2 digest that
	// checks the volume key. Defaults sha256 and 100000 iterations; the key
	// is random, so the count only has to make a brute-force search of the
	// key space no easier than of the key itself.
	DigestHash       string
	DigestIterations int
	// VolumeKey, if set, is used instead of a new random key. It must be
	// KeySize bytes when KeySize is set.
	VolumeKey *secret.Key
}

const (
	defaultMetadataSize     = 0x4000
	defaultDataOffset       = 16 << 20
	defaultCipher           = "aes-xts-plain64"
	defaultKeySize          = 64
	defaultDigestIterations = 100000
)

// Format makes a new header in memory with one crypt segment, a digest of
// the volume key and no keyslots, and returns it with the volume key
// (random unless given). Nothing is written: add keyslots with AddKeyslot
// and commit with Write. WipeKeyslotsArea prepares a device the way
// cryptsetup luksFormat does.
func Format(opts FormatOptions) (*Header, *secret.Key, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	var vk *secret.Key
	if opts.VolumeKey != nil {
		if vk, err = opts.VolumeKey.Clone(); err != nil {
			return nil, nil, err
		}
	} else if vk, err = secret.Random(o.KeySize); err != nil {
		return nil, nil, err
	}
	h, err := formatWithKey(o, vk)
	if err != nil {
		vk.Wipe()
		return nil, nil, err
	}
	return h, vk, nil
}

func (o FormatOptions) withDefaults() (FormatOptions, error) {
	if o.UUID == "" {
		o.UUID = uuid.New().String()
	} else if _, err := uuid.Parse(o.UUID); err != nil {
		return o, fmt.Errorf("luks2: format: %w", err)
	}
	if len(o.Label) >= labelLen || len(o.Subsystem) >= labelLen {
		return o, fmt.Errorf("luks2: format: label and subsystem are limited to %d bytes", labelLen-1)
	}
	if o.MetadataSize == 0 {
		o.MetadataSize = defaultMetadataSize
	}
	if !validMetadataSize(o.MetadataSize) {
		return o, fmt.Errorf("luks2: format: metadata size %d is not one of 16 KiB, 32 KiB, ... 4 MiB", o.MetadataSize)
	}
	if o.DataOffset == 0 {
		o.DataOffset = defaultDataOffset
	}
	if o.DataOffset%4096 != 0 || o.DataOffset < 2*o.MetadataSize {
		return o, fmt.Errorf("luks2: format: data offset %d must be a multiple of 4096 beyond the metadata (%d bytes)", o.DataOffset, 2*o.MetadataSize)
	}
	if o.KeyslotsSize == 0 {
		o.KeyslotsSize = min(o.DataOffset-2*o.MetadataSize, maxKeyslotsSize)
		o.KeyslotsSize -= o.KeyslotsSize % 4096
	}
	if o.Cipher == "" {
		o.Cipher = defaultCipher
	}
	if o.KeySize == 0 {
		o.KeySize = defaultKeySize
		if o.VolumeKey != nil {
			o.KeySize = o.VolumeKey.Len()
		}
	}
	if o.VolumeKey != nil && o.VolumeKey.Len() != o.KeySize {
		return o, fmt.Errorf("luks2: format: volume key is %d bytes, key size %d", o.VolumeKey.Len(), o.KeySize)
	}
	if o.KeySize < 16 || o.KeySize > 512 {
		return o, fmt.Errorf("luks2: format: key size %d bytes out of range", o.KeySize)
	}
	if o.SectorSize == 0 {
		o.SectorSize = sectorSize
	}
	if !validSectorSize(o.SectorSize) {
		return o, fmt.Errorf("luks2: format: sector size %d is not a power of two from 512 to 4096", o.SectorSize)
	}
	if o.DataOffset%uint64(o.SectorSize) != 0 {
		return o, fmt.Errorf("luks2: format: data offset %d is not a multiple of the sector size %d", o.DataOffset, o.SectorSize)
	}
	if o.DigestHash == "" {
		o.DigestHash = "sha256"
	}
	if o.DigestIterations == 0 {
		o.DigestIterations = defaultDigestIterations
	}
	if o.DigestIterations < minPBKDF2Iterations {
		return o, fmt.Errorf("luks2: format: digest iterations %d below the minimum %d", o.DigestIterations, minPBKDF2Iterations)
	}
	return o, nil
}

func formatWithKey(o FormatOptions, vk *secret.Key) (*Header, error) {
	seg := &object{}
	seg.set("type", encodeValue("crypt"))
	seg.set("offset", encodeValue(strconv.FormatUint(o.DataOffset, 10)))
	seg.set("size", encodeValue("dynamic"))
	seg.set("iv_tweak", encodeValue("0"))
	seg.set("encryption", encodeValue(o.Cipher))
	seg.set("sector_size", encodeValue(o.SectorSize))
	segments := &object{}
	segments.set("0", seg.marshal())

	dig, err := newDigestJSON(vk.Bytes(), o.DigestHash, o.DigestIterations)
	if err != nil {
		return nil, err
	}
	digests := &object{}
	digests.set("0", dig.marshal())

	cfg := &object{}
	cfg.set("json_size", encodeValue(strconv.FormatUint(o.MetadataSize-binHeaderSize, 10)))
	cfg.set("keyslots_size", encodeValue(strconv.FormatUint(o.KeyslotsSize, 10)))

	root := &object{}
	root.set("keyslots", []byte("{}"))
	root.set("tokens", []byte("{}"))
	root.set("segments", segments.marshal())
	root.set("digests", digests.marshal())
	root.set("config", cfg.marshal())

	h := &Header{
		hdrSize: o.MetadataSize, label: o.Label, subsystem: o.Subsystem,
		uuid: o.UUID, csumAlg: "sha256",
	}
	for _, salt := range []*[saltLen]byte{&h.salt1, &h.salt2} {
		if _, err := rand.Read(salt[:]); err != nil {
			return nil, fmt.Errorf("luks2: header salt: %w", err)
		}
	}
	if err := h.replace(root); err != nil {
		return nil, fmt.Errorf("luks2: format: %w", err)
	}
	return h, nil
}

// WipeKeyslotsArea prepares dev for a new header as cryptsetup luksFormat
// does: both metadata copies are zeroed and the keyslot area is filled
// with random data, so no stale key material or old header survives and
// unused keyslot space is indistinguishable from used. Call it before the
// first AddKeyslot; it refuses once there are keyslots, whose key material
// it would destroy.
func (h *Header) WipeKeyslotsArea(dev WriterAtSyncer) error {
	if n := len(h.meta.keyslots); n > 0 {
		return fmt.Errorf("luks2: refusing to wipe the keyslot area of a header with %d keyslots", n)
	}
	zero := make([]byte, 2*h.hdrSize)
	if _, err := dev.WriteAt(zero, 0); err != nil {
		return fmt.Errorf("luks2: wipe metadata: %w", err)
	}
	if err := wipeRandom(dev, 2*h.hdrSize, h.meta.config.keyslotsSize); err != nil {
		return fmt.Errorf("luks2: wipe keyslot area: %w", err)
	}
	return nil
}
