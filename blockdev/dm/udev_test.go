package dm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
)

// The values of libdevmapper.h, spelled out independently of udev.go.
func TestUdevConstantsMatchLibdevmapper(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint32
	}{
		{"DM_COOKIE_MAGIC", cookieMagic, 0x0D4D},
		{"DM_UDEV_FLAGS_SHIFT", udevFlagsShift, 16},
		{"DM_UDEV_FLAGS_MASK", udevFlagsMask, 0xFFFF0000},
		{"DM_UDEV_DISABLE_DM_RULES_FLAG", udevDisableDMRules, 0x0001},
		{"DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG", udevDisableSubsystemRules, 0x0002},
		{"DM_UDEV_DISABLE_LIBRARY_FALLBACK", udevDisableLibraryFallback, 0x0020},
		{"DM_UDEV_PRIMARY_SOURCE_FLAG", udevPrimarySource, 0x0040},
		{"DM_UEVENT_GENERATED_FLAG", flagUeventGenerated, 1 << 13},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

// TestUdevEventNr checks the event_nr of each mode bit by bit, and, where
// dmsetup is installed, that "dmsetup udevflags" (what the udev rules run
// on DM_COOKIE) reads back the flags meant, and "udevcomplete" finds the
// semaphore key.
func TestUdevEventNr(t *testing.T) {
	dmsetup, err := exec.LookPath("dmsetup")
	if err != nil {
		if tstest.InCI() {
			t.Error("dmsetup (package dmsetup) is required in CI")
		}
		t.Log("dmsetup not installed: not checking with dmsetup udevflags")
	}
	for _, c := range []struct {
		mode   UdevMode
		cookie uint32
		want   uint32
		names  []string
	}{
		{UdevSync, 0x0D4D1234, 0x00601234, []string{"DM_UDEV_DISABLE_LIBRARY_FALLBACK_FLAG", "DM_UDEV_PRIMARY_SOURCE_FLAG"}},
		{UdevSync, 0x0D4DFFFF, 0x0060FFFF, []string{"DM_UDEV_DISABLE_LIBRARY_FALLBACK_FLAG", "DM_UDEV_PRIMARY_SOURCE_FLAG"}},
		{UdevUnsynced, 0, 0x00430000, []string{"DM_UDEV_DISABLE_DM_RULES_FLAG", "DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG", "DM_UDEV_PRIMARY_SOURCE_FLAG"}},
		{UdevNone, 0, 0x00400000, []string{"DM_UDEV_PRIMARY_SOURCE_FLAG"}},
	} {
		t.Run(fmt.Sprintf("%v/%#x", c.mode, c.cookie), func(t *testing.T) {
			got := udevEventNr(udevFlags(c.mode), c.cookie)
			if got != c.want {
				t.Fatalf("event_nr = %#08x, want %#08x", got, c.want)
			}
			if c.cookie != 0 && semKey(got) != c.cookie {
				t.Errorf("semaphore key of DM_COOKIE %#x = %#x, want %#x", got, semKey(got), c.cookie)
			}
			if dmsetup == "" {
				return
			}
			out, err := exec.Command(dmsetup, "udevflags", strconv.FormatUint(uint64(got), 10)).Output()
			if err != nil {
				t.Fatalf("dmsetup udevflags %d: %v", got, err)
			}
			var names []string
			for _, l := range strings.Fields(string(out)) {
				name, ok := strings.CutSuffix(l, "='1'")
				if !ok {
					t.Fatalf("dmsetup udevflags: unexpected line %q", l)
				}
				names = append(names, name)
			}
			slices.Sort(names)
			if !slices.Equal(names, c.names) {
				t.Errorf("dmsetup udevflags %#x = %q, want %q", got, names, c.names)
			}
		})
	}
}

func TestDetectUdev(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "control")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	plain := filepath.Join(dir, "not-a-socket")
	os.WriteFile(plain, nil, 0o600)
	sem := filepath.Join(dir, "sem")
	os.WriteFile(sem, nil, 0o600)
	missing := filepath.Join(dir, "missing")

	// etc masks or overrides lib; lib holds the packaged rule.
	rules := func(name, etc, lib string) []string {
		base := filepath.Join(dir, name)
		dirs := []string{filepath.Join(base, "etc"), filepath.Join(base, "lib")}
		for i, what := range []string{etc, lib} {
			os.MkdirAll(dirs[i], 0o755)
			p := filepath.Join(dirs[i], notifyRulesName)
			switch what {
			case "rule":
				os.WriteFile(p, []byte(`ENV{DM_COOKIE}=="?*", RUN+="/sbin/dmsetup udevcomplete $env{DM_COOKIE}"`+"\n"), 0o644)
			case "empty":
				os.WriteFile(p, nil, 0o644)
			case "devnull":
				os.Symlink("/dev/null", p)
			}
		}
		return dirs
	}
	for _, c := range []struct {
		name    string
		control string
		dirs    []string
		sem     string
		want    UdevMode
	}{
		{"no udev", missing, rules("a", "", "rule"), sem, UdevNone},
		{"control is not a socket", plain, rules("b", "", "rule"), sem, UdevNone},
		{"udev with dmsetup's rules", sock, rules("c", "", "rule"), sem, UdevSync},
		{"rule overridden in etc", sock, rules("d", "rule", ""), sem, UdevSync},
		{"udev without dmsetup", sock, rules("e", "", ""), sem, UdevUnsynced},
		{"rule masked by /dev/null", sock, rules("f", "devnull", "rule"), sem, UdevUnsynced},
		{"rule masked by an empty file", sock, rules("g", "empty", "rule"), sem, UdevUnsynced},
		{"no SysV semaphores", sock, rules("h", "", "rule"), missing, UdevUnsynced},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := detectUdev(c.control, c.dirs, c.sem); got != c.want {
				t.Errorf("detectUdev = %v, want %v", got, c.want)
			}
		})
	}
}

// udevComplete does what "dmsetup udevcomplete $env{DM_COOKIE}" does in
// 95-dm-notify.rules: find the semaphore from the cookie the uevent
// carried (flags in the upper half) and decrement it without waiting.
func udevComplete(dmCookie uint32) error {
	if dmCookie&^uint32(udevFlagsMask) == 0 {
		return nil // flags only
	}
	id, err := semget(semKey(dmCookie), 1, 0)
	if err != nil {
		return fmt.Errorf("semget: %w", err)
	}
	return semop(id, []sembuf{{num: 0, op: -1, flg: unix.IPC_NOWAIT}})
}

// semKeys lists the keys in /proc/sysvipc/sem.
func semKeys(t *testing.T) []uint32 {
	t.Helper()
	f, err := os.Open(sysvSemProc)
	if err != nil {
		t.Skipf("no SysV semaphores: %v", err)
	}
	defer f.Close()
	var keys []uint32
	s := bufio.NewScanner(f)
	s.Scan() // header
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 0 {
			continue
		}
		k, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", sysvSemProc, s.Text(), err)
		}
		keys = append(keys, uint32(k))
	}
	return keys
}

func requireGone(t *testing.T, c *cookie) {
	t.Helper()
	if slices.Contains(semKeys(t), c.key) {
		t.Errorf("semaphore %#x left in %s", c.key, sysvSemProc)
		c.destroy()
	}
}

// TestCookieProtocol runs the semaphore protocol against a stand-in for
// udev's side that does what dmsetup does.
func TestCookieProtocol(t *testing.T) {
	semKeys(t) // skips without SysV IPC
	flags := udevFlags(UdevSync)

	t.Run("completed before the wait", func(t *testing.T) {
		c, err := newCookie()
		if err != nil {
			t.Fatal(err)
		}
		if c.key>>16 != cookieMagic || c.key&0xFFFF == 0 {
			t.Fatalf("key %#x: want DM_COOKIE_MAGIC and a non-zero base", c.key)
		}
		if !slices.Contains(semKeys(t), c.key) {
			t.Fatalf("key %#x not in %s", c.key, sysvSemProc)
		}
		if err := udevComplete(c.eventNr(flags)); err != nil {
			t.Fatal(err)
		}
		if err := c.wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		requireGone(t, c)
	})

	t.Run("completed while waiting", func(t *testing.T) {
		c, err := newCookie()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.wait(t.Context()) }()
		// GETZCNT counts the processes blocked waiting for zero: the
		// waiter is blocked once it is 1.
		const getZCnt = 15
		for n := 0; n != 1; {
			select {
			case err := <-done:
				t.Fatalf("wait returned %v before udev completed", err)
			default:
			}
			if n, err = semctl(c.semid, 0, getZCnt, 0); err != nil {
				t.Fatal(err)
			}
		}
		if err := udevComplete(c.eventNr(flags)); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		requireGone(t, c)
	})

	t.Run("udev never completes", func(t *testing.T) {
		c, err := newCookie()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		if err := c.wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("wait = %v, want DeadlineExceeded", err)
		}
		requireGone(t, c)
		// udev's late udevcomplete finds nothing and harms nothing.
		if err := udevComplete(c.eventNr(flags)); !errors.Is(err, unix.ENOENT) {
			t.Errorf("late udevcomplete: %v, want ENOENT", err)
		}
	})

	t.Run("no event, destroyed at once", func(t *testing.T) {
		c, err := newCookie()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.destroy(); err != nil {
			t.Fatal(err)
		}
		if err := c.destroy(); err != nil {
			t.Fatalf("second destroy: %v", err)
		}
		requireGone(t, c)
	})

	t.Run("flags-only cookie", func(t *testing.T) {
		if err := udevComplete(udevEventNr(udevFlags(UdevUnsynced), 0)); err != nil {
			t.Fatal(err)
		}
	})
}
