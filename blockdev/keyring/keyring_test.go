package keyring

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
)

// uniqueDesc returns a description no other test run uses, so checks of
// /proc/keys cannot be confused by a concurrent run or a real agent.
func uniqueDesc(t *testing.T) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return Description("test-" + hex.EncodeToString(b[:]))
}

// requireKeyring skips where the kernel has no key retention service (or
// a seccomp filter hides it), and fails instead under CI=true.
func requireKeyring(t *testing.T) {
	t.Helper()
	_, err := unix.KeyctlInt(unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_PROCESS_KEYRING, 1, 0, 0)
	if err == nil {
		return
	}
	tstest.Unavailable(t, "kernel keyring unavailable (a kernel with CONFIG_KEYS, no seccomp filter on keyctl): %v", err)
}

func randomKey(t *testing.T) *secret.Key {
	t.Helper()
	k, err := secret.Random(64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Wipe)
	return k
}

// procKeysHas reports whether /proc/keys lists a key with description desc.
func procKeysHas(t *testing.T, desc string) bool {
	t.Helper()
	lines, err := Listed(desc + ":")
	if err != nil {
		t.Fatal(err)
	}
	return len(lines) > 0
}

func TestValidateDescription(t *testing.T) {
	tests := []struct {
		desc string
		ok   bool
	}{
		{"kmsagent:vol", true},
		{"kmsagent:a:b", true},
		{"x:y", true},
		{"novolume", false},
		{":vol", false},
		{"kmsagent:", false},
		{"kmsagent:a b", false},
		{"kmsagent:a\tb", false},
		{"kmsagent:a\x00", false},
		{"kmsagent:\xff", false},
		{"kmsagent:" + strings.Repeat("a", 5000), false},
	}
	for _, tt := range tests {
		err := ValidateDescription(tt.desc)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateDescription(%.40q) = %v, want ok=%v", tt.desc, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
	}
}

func TestWithLogonKeyRefusesBadInput(t *testing.T) {
	called := false
	fn := func(string) error { called = true; return nil }
	tests := []struct {
		name string
		desc string
		key  []byte
	}{
		{"no prefix", "vol", make([]byte, 64)},
		{"empty key", Description("vol"), nil},
		{"oversized key", Description("vol"), make([]byte, MaxPayload+1)},
	}
	for _, tt := range tests {
		if err := WithLogonKey(tt.desc, tt.key, fn); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
	if called {
		t.Error("callback ran for invalid input")
	}
	if err := WithSecret(Description("vol"), nil, fn); err == nil || called {
		t.Error("WithSecret accepted a nil key")
	}
}

// TestLogonKeyLifecycle checks, from inside the callback, that the key is
// on this thread's keyring, listed in /proc/keys and not readable from
// user space; and afterwards that it is invalidated, gone from /proc/keys
// and that its thread has exited.
func TestLogonKeyLifecycle(t *testing.T) {
	requireKeyring(t)
	key := randomKey(t)
	desc := uniqueDesc(t)
	var id, tid int
	err := WithSecret(desc, key, func(d string) error {
		if d != desc {
			return fmt.Errorf("callback got description %q, want %q", d, desc)
		}
		tid = unix.Gettid()
		var err error
		id, err = unix.KeyctlSearch(unix.KEY_SPEC_THREAD_KEYRING, "logon", desc, 0)
		if err != nil {
			return fmt.Errorf("key not on the thread keyring: %w", err)
		}
		if !procKeysHas(t, desc) {
			return errors.New("key not listed in /proc/keys while in use")
		}
		buf := make([]byte, 128)
		n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
		if !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("keyctl read of a logon key: n=%d err=%v, want EOPNOTSUPP", n, err)
		}
		for _, b := range buf {
			if b != 0 {
				return errors.New("keyctl read returned key bytes")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.KeyctlString(unix.KEYCTL_DESCRIBE, id); err == nil {
		t.Error("key still describable after WithLogonKey returned")
	}
	if !tstest.Poll(5*time.Second, func() bool { return !procKeysHas(t, desc) }) {
		t.Error("key still in /proc/keys 5 s after WithLogonKey returned")
	}
	if !tstest.Poll(5*time.Second, func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid))
		return errors.Is(err, os.ErrNotExist)
	}) {
		t.Errorf("locked thread %d did not exit (pid %d)", tid, os.Getpid())
	}
	if key.Len() != 64 {
		t.Error("caller's key was changed")
	}
}

// TestKeyInvisibleToOtherThreads looks for the key from another thread of
// the same process, through its own thread keyring and the session
// keyring; neither may find it.
func TestKeyInvisibleToOtherThreads(t *testing.T) {
	requireKeyring(t)
	key := randomKey(t)
	desc := uniqueDesc(t)
	err := WithSecret(desc, key, func(string) error {
		self := unix.Gettid()
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if unix.Gettid() == self {
				errc <- errors.New("probe ran on the key's thread")
				return
			}
			for _, ring := range []int{unix.KEY_SPEC_THREAD_KEYRING, unix.KEY_SPEC_PROCESS_KEYRING, unix.KEY_SPEC_SESSION_KEYRING} {
				if id, err := unix.KeyctlSearch(ring, "logon", desc, 0); err == nil {
					errc <- fmt.Errorf("another thread found the key (id %d) via keyring %d", id, ring)
					return
				}
			}
			errc <- nil
		}()
		return <-errc
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCallbackErrorAndPanicStillDiscardKey(t *testing.T) {
	requireKeyring(t)
	key := randomKey(t)
	sentinel := errors.New("load failed")
	tests := []struct {
		name  string
		fn    func() error
		panic bool
	}{
		{"error", func() error { return sentinel }, false},
		{"panic", func() error { panic("boom") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			desc := uniqueDesc(t)
			var id int
			run := func() (panicked any, err error) {
				defer func() { panicked = recover() }()
				err = WithSecret(desc, key, func(string) error {
					id, _ = unix.KeyctlSearch(unix.KEY_SPEC_THREAD_KEYRING, "logon", desc, 0)
					return tt.fn()
				})
				return nil, err
			}
			p, err := run()
			if tt.panic {
				if p != "boom" {
					t.Fatalf("panic = %v, want boom re-raised in the caller", p)
				}
			} else if !errors.Is(err, sentinel) {
				t.Fatalf("err = %v, want the callback's error", err)
			}
			if id == 0 {
				t.Fatal("key was not found inside the callback")
			}
			if _, err := unix.KeyctlString(unix.KEYCTL_DESCRIBE, id); err == nil {
				t.Error("key survived the failed callback")
			}
			if !tstest.Poll(5*time.Second, func() bool { return !procKeysHas(t, desc) }) {
				t.Error("key still in /proc/keys")
			}
		})
	}
}

// TestConcurrentKeys runs several WithLogonKey at once; each callback
// waits until all keys exist, then checks it runs on its own thread and
// sees its own key but none of the others.
func TestConcurrentKeys(t *testing.T) {
	requireKeyring(t)
	const n = 8
	key := randomKey(t)
	descs := make([]string, n)
	for i := range descs {
		descs[i] = uniqueDesc(t)
	}
	var (
		arrived sync.WaitGroup
		wg      sync.WaitGroup
		mu      sync.Mutex
		tids    = map[int]bool{}
		errs    = make([]error, n)
	)
	arrived.Add(n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = WithSecret(descs[i], key, func(string) error {
				mu.Lock()
				tids[unix.Gettid()] = true
				mu.Unlock()
				arrived.Done()
				arrived.Wait()
				for j, d := range descs {
					_, err := unix.KeyctlSearch(unix.KEY_SPEC_THREAD_KEYRING, "logon", d, 0)
					if j == i && err != nil {
						return fmt.Errorf("own key not found: %w", err)
					}
					if j != i && err == nil {
						return fmt.Errorf("found key %d of another thread", j)
					}
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d: %v", i, err)
		}
	}
	if len(tids) != n {
		t.Errorf("%d callbacks ran on %d distinct threads", n, len(tids))
	}
	for _, d := range descs {
		if !tstest.Poll(5*time.Second, func() bool { return !procKeysHas(t, d) }) {
			t.Errorf("key %s still in /proc/keys", d)
		}
	}
}
