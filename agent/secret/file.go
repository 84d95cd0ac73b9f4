package secret

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// ReadFile reads a secret (an access secret, a passphrase) from a file
// that only its owner may read, into a Key. The bytes are returned as they
// are; callers decide about trailing newlines, because cryptsetup's
// --key-file, for one, counts them.
func ReadFile(path string, maxSize int) (*Key, error) {
	// O_NONBLOCK so that a FIFO put there by mistake fails the regular
	// file check below instead of blocking.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("secret file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("secret file %s is readable by group or others (mode %#o); run chmod 600 %s", path, perm, path)
	}
	buf := make([]byte, maxSize+1)
	defer Zero(buf)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read secret file %s: %w", path, err)
	}
	if n > maxSize {
		return nil, fmt.Errorf("secret file %s is larger than %d bytes", path, maxSize)
	}
	if n == 0 {
		return nil, fmt.Errorf("secret file %s is empty", path)
	}
	return FromBytes(buf[:n])
}

// ReadTokenFile reads a secret that is one word, such as an API secret
// key: surrounding white space is dropped, and a file with more than one
// line or with blanks inside is refused as a likely mistake.
func ReadTokenFile(path string, maxSize int) (*Key, error) {
	raw, err := ReadFile(path, maxSize)
	if err != nil {
		return nil, err
	}
	k, err := raw.TrimSpace()
	if err != nil {
		return nil, err
	}
	b := k.Bytes()
	switch {
	case len(b) == 0:
		err = fmt.Errorf("secret file %s is empty", path)
	case bytes.ContainsAny(b, "\r\n"):
		err = fmt.Errorf("secret file %s holds more than one line; it must hold only the secret", path)
	case bytes.ContainsAny(b, " \t"):
		err = fmt.Errorf("secret file %s has blanks inside the secret; it must hold only the secret", path)
	}
	if err != nil {
		k.Wipe()
		return nil, err
	}
	return k, nil
}

// TrimSpace returns k without leading and trailing ASCII white space, as
// a new key, and wipes k.
func (k *Key) TrimSpace() (*Key, error) {
	b := k.Bytes()
	i, j := 0, len(b)
	for i < j && isSpace(b[i]) {
		i++
	}
	for j > i && isSpace(b[j-1]) {
		j--
	}
	out, err := New(j - i)
	if err == nil {
		copy(out.Bytes(), b[i:j])
	}
	k.Wipe()
	return out, err
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// ErrTooLarge is returned by ReadAll for input over its limit.
var ErrTooLarge = errors.New("input larger than allowed")

// ReadAll reads r to EOF, at most limit bytes, into one buffer. When the
// buffer has to grow, the old one is zeroed, so input holding key
// material (an HTTP body, say) leaves exactly one copy, which the caller
// zeroes. hint is the expected size (Content-Length), or -1.
func ReadAll(r io.Reader, hint, limit int64) ([]byte, error) {
	size := int64(4096)
	if hint >= 0 && hint < limit {
		size = hint + 1 // +1 to see EOF without growing
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				Zero(buf)
				return nil, fmt.Errorf("%w (%d bytes)", ErrTooLarge, limit)
			}
			next := make([]byte, len(buf), min(int64(2*cap(buf)), limit+1))
			copy(next, buf)
			Zero(buf)
			buf = next
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			if int64(len(buf)) > limit {
				Zero(buf)
				return nil, fmt.Errorf("%w (%d bytes)", ErrTooLarge, limit)
			}
			return buf, nil
		}
		if err != nil {
			Zero(buf)
			return nil, err
		}
	}
}
