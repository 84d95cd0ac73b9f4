package cryptfs

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// asCaller runs fn on a thread that carries the credentials of the FUSE
// request's caller: its user and group IDs and its supplementary groups.
// It is for the rare operation whose outcome the cipher directory's file
// system decides by who asks, which the kernel cannot tell us in a
// request. The thread is never given back: it ends with the goroutine,
// so no other goroutine can ever run with the caller's credentials and no
// restore can fail halfway. Supplementary groups come from
// /proc/<pid>/status; when that cannot be read (the caller is gone or in
// another PID namespace) the caller gets none, which can only narrow what
// it may do.
func asCaller(caller *fuse.Caller, fn func() error) error {
	groups := callerGroups(caller.Pid)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		if err := setThreadCreds(caller.Uid, caller.Gid, groups); err != nil {
			errc <- fmt.Errorf("cryptfs: take the caller's credentials: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// setThreadCreds changes the credentials of the calling thread only: raw
// system calls, not the C library's or Go's, which apply them to every
// thread of the process. The user ID goes last, since dropping root
// takes away the right to change the others.
func setThreadCreds(uid, gid uint32, groups []uint32) error {
	var p unsafe.Pointer
	if len(groups) > 0 {
		p = unsafe.Pointer(&groups[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(groups)), uintptr(p), 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, ^uintptr(0), uintptr(gid), ^uintptr(0)); e != 0 {
		return fmt.Errorf("setresgid: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	return nil
}

// callerGroups reads the supplementary groups of process pid, or none.
func callerGroups(pid uint32) []uint32 {
	if pid == 0 {
		return nil
	}
	f, err := os.Open("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		return parseGroups(rest)
	}
	return nil
}

// parseGroups parses the list of a status file's Groups: line; anything
// that is not a group ID makes the whole list empty.
func parseGroups(s string) []uint32 {
	var groups []uint32
	for _, f := range strings.Fields(s) {
		g, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil
		}
		groups = append(groups, uint32(g))
	}
	return groups
}
