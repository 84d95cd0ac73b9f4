package progress

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/tstest"
)

// clock is a manual clock for a meter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestFormat(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{Bytes(0), "0 B"},
		{Bytes(1023), "1023 B"},
		{Bytes(1024), "1.0 KiB"},
		{Bytes(1536 << 20), "1.5 GiB"},
		{Bytes(40 << 40), "40.0 TiB"},
		{RateString(1 << 30), "1.0 GiB/s"},
		{Duration(0), "0s"},
		{Duration(1499 * time.Millisecond), "1s"},
		{Duration(59*time.Second + 600*time.Millisecond), "1m00s"},
		{Duration(3*time.Minute + 5*time.Second), "3m05s"},
		{Duration(2*time.Hour + 7*time.Minute + 40*time.Second), "2h07m"},
		{Line(512<<20, 1<<30, time.Second), "512.0 MiB / 1.0 GiB   50%  512.0 MiB/s  1s left"},
		{Line(10<<30, 40<<30, 100*time.Second), "10.0 GiB / 40.0 GiB   25%  102.4 MiB/s  5m00s left"},
		{Line(0, 1<<30, 0), "0 B / 1.0 GiB    0%  0 B/s  -- left"},
		{Line(3<<20, -1, 2*time.Second), "3.0 MiB  1.5 MiB/s"},
		{Summary(1<<30, 800*time.Millisecond), "1.0 GiB in 0.8s, 1.2 GiB/s"},
		{Summary(40<<30, 90*time.Second), "40.0 GiB in 1m30s, 455.1 MiB/s"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"auto": ModeAuto, "always": ModeAlways, "never": ModeNever} {
		if m, err := ParseMode(s); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseMode("yes"); err == nil {
		t.Error("ParseMode(yes) succeeded")
	}
}

// TestMeter: the line is redrawn at most every 200 ms, in place, and
// replaced by the summary at the end.
func TestMeter(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	m := New(&out, ModeAlways, 4<<20, c.now)
	m.Update(0) // drawn: nothing drawn yet
	c.advance(100 * time.Millisecond)
	m.Update(1 << 20) // too soon
	c.advance(100 * time.Millisecond)
	m.Update(2 << 20) // 200 ms: drawn
	c.advance(200 * time.Millisecond)
	m.Update(4 << 20)
	m.Finish(true)
	want := "\r0 B / 4.0 MiB    0%  0 B/s  -- left\x1b[K" +
		"\r2.0 MiB / 4.0 MiB   50%  10.0 MiB/s  0s left\x1b[K" +
		"\r4.0 MiB / 4.0 MiB  100%  10.0 MiB/s  0s left\x1b[K" +
		"\r4.0 MiB in 0.4s, 10.0 MiB/s\x1b[K\n"
	if out.String() != want {
		t.Fatalf("drawn:\n%q\nwant\n%q", out.String(), want)
	}
}

func TestMeterFailedWork(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	m := New(&out, ModeAlways, 4<<20, c.now)
	m.Update(1 << 20)
	m.Finish(false)
	if s := out.String(); !strings.HasSuffix(s, "left\x1b[K\n") || strings.Contains(s, " in ") {
		t.Fatalf("drawn %q", s)
	}
}

// TestQuiet: never, and auto on anything but a terminal, draw nothing.
func TestQuiet(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	c := &clock{t: time.Unix(1000, 0)}
	for _, m := range []*Meter{New(&buf, ModeNever, 10, c.now), New(&buf, ModeAuto, 10, c.now), New(f, ModeAuto, 10, c.now)} {
		m.Update(5)
		c.advance(time.Second)
		m.Update(10)
		m.Finish(true)
	}
	if fi, _ := f.Stat(); buf.Len() != 0 || fi.Size() != 0 {
		t.Fatalf("drew %q and %d bytes into a file", buf.String(), fi.Size())
	}
}

// TestAutoOnTerminal: auto draws when the writer is a terminal (the
// other end of a pseudo-terminal).
func TestAutoOnTerminal(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		tstest.Unavailable(t, "no pseudo-terminals: %v", err)
	}
	defer ptmx.Close()
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pts.Close()
	c := &clock{t: time.Unix(1000, 0)}
	m := New(pts, ModeAuto, 10, c.now)
	if m.w == nil {
		t.Fatal("auto does not draw on a terminal")
	}
}
