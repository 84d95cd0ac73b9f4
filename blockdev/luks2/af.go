package luks2

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"hash"

	"kmsagent/blockdev/luks2/internal/sha256block"
)

// stripes is the number of anti-forensic stripes cryptsetup uses.
const stripes = 4000

// The LUKS anti-forensic splitter: a key of n bytes becomes stripes*n
// bytes, all of which are needed to get it back, so destroying any part of
// a keyslot area destroys the key. Each stripe but the last is random; a
// running block is XORed with each stripe and diffused by the hash; the
// last stripe is the key XOR the running block.
//
// The diffusion is the largest part of an unlock's CPU (a 64-byte key is
// two hashes per stripe, 8000 per keyslot), so with sha256, the hash
// every keyslot of cryptsetup 2 and ours uses, each hash is one call of
// the bare compression function on a block laid out here, with nothing
// allocated.

// afSplit writes the split of key into dst (len(key)*stripes bytes),
// diffusing with the named hash.
func afSplit(dst, key []byte, stripes int, hashName string) error {
	n := len(key)
	if len(dst) < n*stripes {
		return fmt.Errorf("luks2: af: buffer of %d bytes for %d stripes of %d", len(dst), stripes, n)
	}
	d, err := newDiffuser(hashName)
	if err != nil {
		return err
	}
	defer d.wipe()
	block := make([]byte, n)
	defer clear(block)
	for i := 0; i < stripes-1; i++ {
		s := dst[i*n : (i+1)*n]
		if _, err := rand.Read(s); err != nil {
			return fmt.Errorf("luks2: af: %w", err)
		}
		xor(block, s)
		d.diffuse(block)
	}
	last := dst[(stripes-1)*n : stripes*n]
	copy(last, block)
	xor(last, key)
	return nil
}

// afMerger recovers a key from its split fed in pieces of any size, so
// an unlock can decrypt the keyslot area a few sectors at a time into a
// small locked buffer instead of a locked copy of the whole split.
type afMerger struct {
	dst     []byte // the running block; the key once every stripe is in
	carry   []byte // a stripe cut by the end of a piece
	nc      int
	stripes int
	done    int
	d       *diffuser
}

// newAFMerger merges into dst; carry is scratch of len(dst) bytes, in
// locked memory like dst.
func newAFMerger(dst, carry []byte, stripes int, hashName string) (*afMerger, error) {
	d, err := newDiffuser(hashName)
	if err != nil {
		return nil, err
	}
	clear(dst)
	return &afMerger{dst: dst, carry: carry[:len(dst)], stripes: stripes, d: d}, nil
}

// write merges the next bytes of the split; bytes past the last stripe
// (the padding to whole sectors) are ignored.
func (m *afMerger) write(p []byte) {
	n := len(m.dst)
	for len(p) > 0 && m.done < m.stripes {
		if m.nc > 0 || len(p) < n {
			c := copy(m.carry[m.nc:], p)
			m.nc += c
			p = p[c:]
			if m.nc < n {
				return
			}
			m.stripe(m.carry)
			m.nc = 0
			continue
		}
		m.stripe(p[:n])
		p = p[n:]
	}
}

// stripe merges one stripe: XOR, then diffusion for all but the last.
func (m *afMerger) stripe(s []byte) {
	xor(m.dst, s)
	m.done++
	if m.done < m.stripes {
		m.d.diffuse(m.dst)
	}
}

// complete reports whether every stripe has been merged.
func (m *afMerger) complete() bool { return m.done == m.stripes }

func (m *afMerger) wipe() {
	clear(m.carry)
	m.d.wipe()
}

// xor is dst ^= src. crypto/subtle's vector routine: a byte loop over
// the 4000 stripes of a 64-byte key took a tenth of an unlock's CPU.
func xor(dst, src []byte) { subtle.XORBytes(dst, dst, src) }

// diffuser is the diffusion step with one hash, reused for every stripe.
type diffuser struct {
	h   hash.Hash // nil for sha256
	sum []byte
	// sha256: the block being hashed and the digest, which hold key
	// material until wipe.
	blk [sha256block.BlockSize]byte
	out [sha256block.Size]byte
	st  sha256block.State
	// The same for the two lanes of a 64-byte block.
	blk2 [2][sha256block.BlockSize]byte
	st2  [2]sha256block.State
}

func newDiffuser(hashName string) (*diffuser, error) {
	h, err := hashByName(hashName)
	if err != nil {
		return nil, fmt.Errorf("%w: af: %v", ErrUnsupported, err)
	}
	if hashName == "sha256" {
		d := &diffuser{}
		// The two-lane blocks differ from stripe to stripe only in
		// their 32 message bytes: index and padding are laid out once.
		for i := range 2 {
			binary.BigEndian.PutUint32(d.blk2[i][:4], uint32(i))
			sha256block.Pad(d.blk2[i][:], 4+sha256block.Size, 4+sha256block.Size)
		}
		return d, nil
	}
	hh := h()
	return &diffuser{h: hh, sum: make([]byte, 0, hh.Size())}, nil
}

// diffuse replaces each digest-sized chunk of b (the last one possibly
// short) with the hash of its big-endian index followed by the chunk,
// truncated to the chunk's length.
func (d *diffuser) diffuse(b []byte) {
	if d.h == nil && len(b) == 2*sha256block.Size {
		// A 64-byte key (aes-xts-plain64 with AES-256): two chunks,
		// hashed in the two lanes of Blocks2.
		for i := range 2 {
			copy(d.blk2[i][4:4+sha256block.Size], b[i*sha256block.Size:])
			d.st2[i] = sha256block.IV
		}
		sha256block.Blocks2(&d.st2[0], &d.st2[1], d.blk2[0][:], d.blk2[1][:])
		d.st2[0].Put(b[:sha256block.Size])
		d.st2[1].Put(b[sha256block.Size:])
		return
	}
	if d.h == nil {
		// 4 + at most 32 bytes: always a single padded block.
		for i := 0; i*sha256block.Size < len(b); i++ {
			chunk := b[i*sha256block.Size : min((i+1)*sha256block.Size, len(b))]
			binary.BigEndian.PutUint32(d.blk[:4], uint32(i))
			copy(d.blk[4:], chunk)
			m := 4 + len(chunk)
			d.st = sha256block.IV
			sha256block.Blocks(&d.st, sha256block.Pad(d.blk[:], m, uint64(m)))
			d.st.Put(d.out[:])
			copy(chunk, d.out[:])
		}
		return
	}
	size := d.h.Size()
	var idx [4]byte
	for i := 0; i*size < len(b); i++ {
		chunk := b[i*size : min((i+1)*size, len(b))]
		d.h.Reset()
		binary.BigEndian.PutUint32(idx[:], uint32(i))
		d.h.Write(idx[:])
		d.h.Write(chunk)
		d.sum = d.h.Sum(d.sum[:0])
		copy(chunk, d.sum)
	}
}

// wipe zeroes what the diffuser holds of the last block; a hash.Hash's
// internal buffer is out of reach.
func (d *diffuser) wipe() {
	clear(d.sum[:cap(d.sum)])
	clear(d.blk[:])
	clear(d.out[:])
	d.st = sha256block.State{}
	clear(d.blk2[0][4 : 4+sha256block.Size])
	clear(d.blk2[1][4 : 4+sha256block.Size])
	d.st2 = [2]sha256block.State{}
}
