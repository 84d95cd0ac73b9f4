package keyring

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
)

// The main goroutine starts on the process's main thread; locking it there
// in init lets TestMain drive onFreshThread from the main thread, the one
// thread the runtime never ends.
func init() { runtime.LockOSThread() }

// mainThreadResult is what TestMain saw, checked by TestMainThreadAvoided.
var mainThreadResult struct {
	ran      bool
	tid      int
	mainTID  int
	err      error
	keyFound bool
}

func TestMain(m *testing.M) {
	r := &mainThreadResult
	r.mainTID = unix.Gettid()
	if _, err := unix.KeyctlInt(unix.KEYCTL_GET_KEYRING_ID, unix.KEY_SPEC_PROCESS_KEYRING, 1, 0, 0); err == nil && r.mainTID == os.Getpid() {
		done := make(chan outcome, 1)
		key := []byte("0123456789abcdef0123456789abcdef")
		onFreshThread(Description(fmt.Sprintf("test-main-%d", os.Getpid())), key, func(d string) error {
			r.ran = true
			r.tid = unix.Gettid()
			_, err := unix.KeyctlSearch(unix.KEY_SPEC_THREAD_KEYRING, "logon", d, 0)
			r.keyFound = err == nil
			return nil
		}, done)
		r.err = (<-done).err
	}
	os.Exit(m.Run())
}

// TestMainThreadAvoided checks that work started on the main thread moves
// to another thread, which can exit and take its keyring with it.
func TestMainThreadAvoided(t *testing.T) {
	r := mainThreadResult
	if r.mainTID != os.Getpid() {
		t.Skip("TestMain did not run on the main thread")
	}
	requireKeyring(t)
	if !r.ran || r.err != nil {
		t.Fatalf("callback ran=%v err=%v", r.ran, r.err)
	}
	if r.tid == r.mainTID {
		t.Fatal("callback ran on the main thread")
	}
	if !r.keyFound {
		t.Error("key not found on the callback's thread keyring")
	}
	if !tstest.Poll(5*time.Second, func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", r.tid))
		return os.IsNotExist(err)
	}) {
		t.Errorf("thread %d did not exit", r.tid)
	}
}
