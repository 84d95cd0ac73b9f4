package sha256block

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// sum hashes msg with Blocks and Pad, with the given compression.
func sum(msg []byte, blocks func(*State, []byte)) [Size]byte {
	s := IV
	full := len(msg) / BlockSize * BlockSize
	blocks(&s, msg[:full])
	buf := make([]byte, 2*BlockSize)
	n := copy(buf, msg[full:])
	blocks(&s, Pad(buf, n, uint64(len(msg))))
	var out [Size]byte
	s.Put(out[:])
	return out
}

func TestAgainstStdlib(t *testing.T) {
	impls := []struct {
		name   string
		blocks func(*State, []byte)
	}{{"generic", blocksGeneric}, {"Blocks", Blocks}}
	if haveSHANI {
		impls = append(impls, struct {
			name   string
			blocks func(*State, []byte)
		}{"shani", blocksSHANI})
	} else {
		t.Log("no SHA extensions here: only the portable code is tested")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, im := range impls {
		for n := range 300 {
			msg := make([]byte, n)
			for i := range msg {
				msg[i] = byte(r.Uint32())
			}
			if got, want := sum(msg, im.blocks), sha256.Sum256(msg); got != want {
				t.Fatalf("%s: %d bytes: %x, want %x", im.name, n, got, want)
			}
		}
	}
}

func TestPadShape(t *testing.T) {
	for _, tc := range []struct{ n, blocks int }{{0, 1}, {55, 1}, {56, 2}, {119, 2}} {
		buf := bytes.Repeat([]byte{0xff}, 2*BlockSize)
		if got := len(Pad(buf, tc.n, uint64(tc.n))); got != tc.blocks*BlockSize {
			t.Errorf("n=%d: %d bytes, want %d", tc.n, got, tc.blocks*BlockSize)
		}
	}
}

func BenchmarkBlock(b *testing.B) {
	var s State = IV
	buf := make([]byte, BlockSize)
	b.SetBytes(BlockSize)
	for b.Loop() {
		Blocks(&s, buf)
	}
}

func BenchmarkStdlibSum36(b *testing.B) {
	buf := make([]byte, 36)
	b.SetBytes(BlockSize)
	for b.Loop() {
		s := sha256.Sum256(buf)
		buf[0] = s[0]
	}
}

// TestBlocks2 checks the two-lane routine against one lane at a time,
// over chains of one to five blocks from different states.
func TestBlocks2(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for n := 0; n <= 5; n++ {
		for range 50 {
			pa, pb := make([]byte, n*BlockSize), make([]byte, n*BlockSize)
			for i := range pa {
				pa[i], pb[i] = byte(r.Uint32()), byte(r.Uint32())
			}
			var a, b State
			for i := range a {
				a[i], b[i] = r.Uint32(), r.Uint32()
			}
			wa, wb := a, b
			blocksGeneric(&wa, pa)
			blocksGeneric(&wb, pb)
			Blocks2(&a, &b, pa, pb)
			if a != wa || b != wb {
				t.Fatalf("%d blocks: lanes differ from one at a time", n)
			}
		}
	}
}

func BenchmarkBlock2(b *testing.B) {
	s, t := IV, IV
	buf := make([]byte, BlockSize)
	b.SetBytes(2 * BlockSize)
	for b.Loop() {
		Blocks2(&s, &t, buf, buf)
	}
}
