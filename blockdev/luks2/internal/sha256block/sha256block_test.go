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
