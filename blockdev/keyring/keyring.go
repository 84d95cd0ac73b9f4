package keyring

import (
	"errors"
	"fmt"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
)

// Prefix is the description prefix of this agent's keys. Logon keys must
// have a "prefix:"; the kernel refuses others with EINVAL.
const Prefix = "kmsagent:"

// MaxPayload is the largest logon key payload the kernel accepts.
const MaxPayload = 32767

// Description returns the key description for a volume, "kmsagent:<name>",
// as it appears in the crypt table ":<size>:logon:kmsagent:<name>".
func Description(name string) string { return Prefix + name }

// ValidateDescription checks a logon key description: a non-empty
// prefix before ':', something after it, and no blanks or control bytes,
// since the description is also a field of a blank-separated table.
func ValidateDescription(desc string) error {
	i := strings.IndexByte(desc, ':')
	switch {
	case i <= 0:
		return fmt.Errorf("keyring: logon key description %q lacks a \"prefix:\"", desc)
	case i == len(desc)-1:
		return fmt.Errorf("keyring: logon key description %q is empty after the prefix", desc)
	case len(desc) > 4095:
		return fmt.Errorf("keyring: logon key description of %d bytes is too long", len(desc))
	}
	for j := 0; j < len(desc); j++ {
		if c := desc[j]; c <= ' ' || c > '~' {
			return fmt.Errorf("keyring: logon key description %q has a blank or non-printable byte at %d", desc, j)
		}
	}
	return nil
}

// WithLogonKey adds key as a logon key named desc to the thread keyring
// of a fresh locked OS thread, runs fn on that thread with the
// description to reference (e.g. in a crypt table), then invalidates the
// key, whether fn succeeded, failed or panicked. fn must do its work
// (the DM_TABLE_LOAD) itself, not hand it to another goroutine, which
// could run on a thread that cannot see the key.
//
// key is passed to the kernel without a copy on the Go side; the caller
// keeps owning it (typically secret.Key.Bytes()) and wipes it.
func WithLogonKey(desc string, key []byte, fn func(keyDesc string) error) error {
	if err := ValidateDescription(desc); err != nil {
		return err
	}
	if len(key) == 0 || len(key) > MaxPayload {
		return fmt.Errorf("keyring: key of %d bytes; need 1 to %d", len(key), MaxPayload)
	}
	done := make(chan outcome, 1)
	go onFreshThread(desc, key, fn, done)
	out := <-done
	if out.panicked {
		panic(out.panicVal)
	}
	return out.err
}

type outcome struct {
	err      error
	panicked bool
	panicVal any
}

// onFreshThread runs on a goroutine locked to its OS thread and never
// unlocked: when it returns, the Go runtime ends the thread instead of
// reusing it, so the thread keyring (and anything left in it) dies too,
// and no other goroutine ever runs with this thread's keyrings.
func onFreshThread(desc string, key []byte, fn func(string) error, done chan<- outcome) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The runtime never ends the process's main thread; it would keep
		// its thread keyring and sit idle forever. Hold the main thread
		// locked, so the goroutine started here cannot run on it, and let
		// that goroutine do the work on a thread that can exit.
		inner := make(chan outcome, 1)
		go onFreshThread(desc, key, fn, inner)
		out := <-inner
		runtime.UnlockOSThread()
		done <- out
		return
	}
	var out outcome
	defer func() { done <- out }()

	id, err := unix.AddKey("logon", desc, key, unix.KEY_SPEC_THREAD_KEYRING)
	if err != nil {
		out.err = fmt.Errorf("keyring: add logon key %q to the thread keyring: %w", desc, err)
		return
	}
	defer func() {
		if err := discard(id); err != nil {
			out.err = errors.Join(out.err, fmt.Errorf("keyring: invalidate key %q: %w", desc, err))
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			out.panicked, out.panicVal = true, r
		}
	}()
	out.err = fn(desc)
}

// discard makes the key unusable at once and drops it from the thread
// keyring. KEYCTL_INVALIDATE (Linux 3.5) marks it for immediate garbage
// collection; where it is missing, revoke has the same effect on lookups.
func discard(id int) error {
	_, err := unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		_, err = unix.KeyctlInt(unix.KEYCTL_REVOKE, id, 0, 0, 0)
	}
	// Unlinking may fail once the key is invalidated (it is being
	// unlinked by the collector already); that is not an error.
	_, _ = unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_THREAD_KEYRING, 0, 0)
	return err
}

// WithSecret is WithLogonKey for a key held in a secret.Key; the key stays
// the caller's to wipe.
func WithSecret(desc string, key *secret.Key, fn func(keyDesc string) error) error {
	if key == nil {
		return fmt.Errorf("keyring: no key for %q", desc)
	}
	return WithLogonKey(desc, key.Bytes(), fn)
}
