// Package secret holds key material outside the Go heap: in an anonymous
// mapping that is locked into memory (never swapped), excluded from core
// dumps, and zeroed by Wipe. Keys never pass through strings, and printing
// a Key with any fmt verb shows only its length.
//
// It depends on nothing else in kmsagent, so the KMS clients, the block
// device code and the file system all use it without depending on each
// other.
package secret

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime"

	"golang.org/x/sys/unix"
)

// Key is a buffer of key material. The zero value is an empty, wiped key.
// A Key is not safe for concurrent Wipe and use.
type Key struct {
	mem     []byte // whole mapping, page aligned
	n       int    // bytes in use
	cleanup runtime.Cleanup
}

// New returns a zeroed key of n bytes.
func New(n int) (*Key, error) {
	if n < 0 {
		return nil, fmt.Errorf("secret: negative key size %d", n)
	}
	size := max(n, 1)
	page := unix.Getpagesize()
	size = (size + page - 1) / page * page
	// MAP_LOCKED locks and populates the mapping in the same call, one
	// system call fewer per key than mmap and mlock; an unlock makes
	// several keys, and a boot unlocks many volumes at once. Over
	// RLIMIT_MEMLOCK (an unprivileged caller) it fails with EAGAIN: the
	// key is still usable, just swappable, so that is not fatal.
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANONYMOUS|unix.MAP_PRIVATE|unix.MAP_LOCKED)
	if err != nil {
		mem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANONYMOUS|unix.MAP_PRIVATE)
	}
	if err != nil {
		return nil, fmt.Errorf("secret: map %d bytes: %w", size, err)
	}
	_ = unix.Madvise(mem, unix.MADV_DONTDUMP)
	k := &Key{mem: mem, n: n}
	// A key dropped without Wipe is still zeroed and unmapped once
	// unreachable; Wipe cancels this so the mapping is released once only
	// (a second munmap could hit a mapping reused since).
	k.cleanup = runtime.AddCleanup(k, release, mem)
	return k, nil
}

// Random returns a key of n bytes from the system's CSPRNG.
func Random(n int) (*Key, error) {
	k, err := New(n)
	if err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(rand.Reader, k.Bytes()); err != nil {
		k.Wipe()
		return nil, fmt.Errorf("secret: read random key: %w", err)
	}
	return k, nil
}

// FromBytes copies b into a new key and zeroes b, so the caller's
// heap copy does not outlive the call.
func FromBytes(b []byte) (*Key, error) {
	k, err := New(len(b))
	if err != nil {
		Zero(b)
		return nil, err
	}
	copy(k.Bytes(), b)
	Zero(b)
	return k, nil
}

// Bytes returns the key material. The slice aliases the locked buffer and
// is invalid after Wipe; do not keep it.
func (k *Key) Bytes() []byte {
	if k == nil || k.mem == nil {
		return nil
	}
	return k.mem[:k.n:k.n]
}

// Len is the key size in bytes.
func (k *Key) Len() int {
	if k == nil || k.mem == nil {
		return 0
	}
	return k.n
}

// Truncate shortens the key to its first n bytes and zeroes the rest, so
// that a buffer that held a computation's scratch besides its result can
// be handed on as the result, with no copy and no new mapping: mapping
// and unmapping locked memory costs tens of microseconds on a virtual
// machine, and an unlock makes several keys.
func (k *Key) Truncate(n int) {
	if n < 0 || n > k.Len() {
		panic(fmt.Sprintf("secret: Truncate(%d) of a %d-byte key", n, k.Len()))
	}
	Zero(k.mem[n:])
	k.n = n
}

// Clone returns an independent copy of the key.
func (k *Key) Clone() (*Key, error) {
	c, err := New(k.Len())
	if err != nil {
		return nil, err
	}
	copy(c.Bytes(), k.Bytes())
	return c, nil
}

// Equal reports whether two keys hold the same bytes, in constant time
// for keys of equal length.
func (k *Key) Equal(o *Key) bool {
	a, b := k.Bytes(), o.Bytes()
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := range a {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// Wipe zeroes the key and releases its memory. It is safe to call more
// than once.
func (k *Key) Wipe() {
	if k == nil || k.mem == nil {
		return
	}
	k.cleanup.Stop()
	release(k.mem)
	k.mem, k.n = nil, 0
}

// release zeroes and unmaps; munmap drops the lock with the mapping.
func release(mem []byte) {
	Zero(mem)
	_ = unix.Munmap(mem)
}

// Zero overwrites b with zeros in a way the compiler does not elide.
func Zero(b []byte) {
	clear(b)
	runtime.KeepAlive(b)
}

// String redacts the key.
func (k *Key) String() string { return fmt.Sprintf("secret.Key(%d bytes)", k.Len()) }

// GoString redacts the key under %#v.
func (k *Key) GoString() string { return k.String() }

// Format redacts the key under every verb, including %x and %v.
func (k *Key) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// MarshalText refuses, so a key cannot end up in JSON, TOML or a log by
// accident.
func (k *Key) MarshalText() ([]byte, error) { return nil, errRefuseMarshal }

var errRefuseMarshal = errors.New("secret: refusing to marshal key material")
