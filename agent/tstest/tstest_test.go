package tstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/peercred"
)

// recorder is a testing.TB that records how a helper stopped the test.
type recorder struct {
	testing.TB
	failed, skipped string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

// record runs fn on a recorder in a goroutine of its own, as Fatalf and
// Skip end it.
func record(fn func(testing.TB)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

func TestUnavailable(t *testing.T) {
	for _, tt := range []struct {
		ci                 string
		wantFail, wantSkip bool
	}{
		{"true", true, false},
		{"", false, true},
		{"false", false, true},
	} {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := record(func(tb testing.TB) { Unavailable(tb, "frob not installed (apt-get install %s)", "frob") })
			if got := r.failed != ""; got != tt.wantFail || !strings.Contains(r.failed+r.skipped, "frob not installed (apt-get install frob)") {
				t.Errorf("failed %q, skipped %q", r.failed, r.skipped)
			}
			if got := r.skipped != ""; got != tt.wantSkip {
				t.Errorf("failed %q, skipped %q", r.failed, r.skipped)
			}
		})
	}
}

func TestNeedTool(t *testing.T) {
	t.Setenv("CI", "")
	if p := NeedTool(t, "sh", "dash"); p == "" {
		t.Fatal("no path for sh")
	}
	r := record(func(tb testing.TB) { NeedTool(tb, "kmsagent-no-such-tool", "no-such-package") })
	if !strings.Contains(r.skipped, "apt-get install no-such-package") {
		t.Fatalf("skip message %q does not say what to install", r.skipped)
	}
}

func TestNeedFilesystem(t *testing.T) {
	t.Setenv("CI", "")
	NeedFilesystem(t, "proc")
	if r := record(func(tb testing.TB) { NeedFilesystem(tb, "kmsagent-nofs") }); r.skipped == "" {
		t.Fatal("an unknown file system type did not stop the test")
	}
}

func TestPoll(t *testing.T) {
	n := 0
	if !Poll(time.Second, func() bool { n++; return n == 3 }) || n != 3 {
		t.Fatalf("Poll stopped after %d checks", n)
	}
	if Poll(0, func() bool { return false }) {
		t.Fatal("Poll reported a condition that never held")
	}
	r := record(func(tb testing.TB) { WaitFor(tb, 0, "nothing", func() bool { return false }) })
	if !strings.Contains(r.failed, "waiting for nothing") {
		t.Fatalf("WaitFor failed with %q", r.failed)
	}
}

func TestWaitExit(t *testing.T) {
	cmd := exec.Command("cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	if WaitExit(t, cmd.Process.Pid, 0) {
		t.Fatal("cat reported as exited while it reads")
	}
	in.Close()
	if !WaitExit(t, cmd.Process.Pid, 10*time.Second) {
		t.Fatal("cat did not exit when its input closed")
	}
}

func TestNotifySocket(t *testing.T) {
	n := NotifySocket(t)
	c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"STATUS=starting", "STATUS=up\nREADY=1"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	n.Wait(t, 10*time.Second, "READY=1")
	r := record(func(tb testing.TB) { n.Wait(tb, 0, "READY=1") })
	if !strings.Contains(r.failed, "no READY=1") {
		t.Fatalf("Wait with nothing sent: %q", r.failed)
	}
}

func TestLocalKMS(t *testing.T) {
	s, id := LocalKMS(t, "test")
	info, err := s.DescribeKey(t.Context(), "alias/test")
	if err != nil || info.ID != id {
		t.Fatalf("DescribeKey(alias/test) = %+v, %v; want key %s", info, err, id)
	}
}

func TestMounted(t *testing.T) {
	if !Mounted(t, "/proc") {
		t.Fatal("/proc not seen as a mount point")
	}
	dir := t.TempDir()
	if Mounted(t, dir) {
		t.Fatalf("%s seen as a mount point", dir)
	}
	WaitMount(t, "/proc", true, 0)
	WaitMount(t, dir, false, 0)
	r := record(func(tb testing.TB) { WaitMount(tb, dir, true, 0) })
	if !strings.Contains(r.failed, "not mounted") {
		t.Fatalf("WaitMount for a directory that is no mount point: %q", r.failed)
	}
}

func TestBuffer(t *testing.T) {
	var b Buffer
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 100 {
				fmt.Fprint(&b, "x")
			}
		}()
	}
	for range 4 {
		<-done
	}
	if n := len(b.String()); n != 400 {
		t.Fatalf("%d bytes, want 400", n)
	}
}

// TestDialAs connects as other users and checks the credentials the
// kernel recorded for the server.
func TestDialAs(t *testing.T) {
	NeedRoot(t, "to connect with other credentials")
	ln, err := net.Listen("unix", fmt.Sprintf("@tstest-dialas-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, c := range []*Creds{
		nil,
		{UID: 65534, GID: 65534},
		{UID: 65534, GID: 4242, Groups: []int{100, 4243}},
	} {
		conn, err := DialAs(ln.Addr().String(), c)
		if err != nil {
			t.Fatalf("DialAs %+v: %v", c, err)
		}
		defer conn.Close()
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		p := peercred.Of(sc.(*net.UnixConn))
		if p.Err != nil {
			t.Fatal(p.Err)
		}
		want := Creds{UID: os.Geteuid(), GID: os.Getegid(), Groups: p.Groups}
		if c != nil {
			want = *c
		}
		if p.UID != want.UID || p.GID != want.GID || !slices.Equal(p.Groups, want.Groups) {
			t.Errorf("DialAs %+v: peer %v gid %d groups %v", c, p, p.GID, p.Groups)
		}
	}
	// This thread, and so the process, is still root.
	if os.Geteuid() != 0 {
		t.Fatalf("the test process has euid %d after DialAs", os.Geteuid())
	}
	if err := RunAs(Creds{UID: 65534, GID: 65534}, func() error {
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0); e != 0 {
			return e
		}
		return nil
	}); err == nil {
		t.Fatal("a thread running as uid 65534 became root again")
	}
}
