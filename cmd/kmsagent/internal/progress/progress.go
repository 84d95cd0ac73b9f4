// Package progress draws the progress of long byte-by-byte work (image
// encrypt and decrypt of tens of GiB) as one line redrawn in place: bytes
// done and total, rate, time left; and a summary line at the end.
//
// It is for terminals only: under ModeAuto a meter draws only when its
// writer is a terminal, so logs and pipelines get no carriage-return
// noise. The clock is injected, so the arithmetic and the formatting are
// tested without waiting.
package progress

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Mode says when to draw.
type Mode int

const (
	ModeAuto   Mode = iota // when the writer is a terminal
	ModeAlways             // always
	ModeNever              // never
)

// ParseMode parses auto, always or never.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "auto":
		return ModeAuto, nil
	case "always":
		return ModeAlways, nil
	case "never":
		return ModeNever, nil
	}
	return 0, fmt.Errorf("%q is not auto, always or never", s)
}

// redraw is the shortest time between two drawings of the line.
const redraw = 200 * time.Millisecond

// Meter tracks one piece of work. Its methods are not safe for
// concurrent use; callers serialise them.
type Meter struct {
	w      io.Writer // nil: draw nothing
	total  int64     // -1: unknown
	now    func() time.Time
	start  time.Time
	last   time.Time
	done   int64
	drawn  bool
	failed bool // the writer failed; stop drawing
}

// New returns a meter for total bytes (-1 if unknown) drawn on w as mode
// says; now is the clock (time.Now outside tests).
func New(w io.Writer, mode Mode, total int64, now func() time.Time) *Meter {
	if mode == ModeNever || mode == ModeAuto && !isTerminal(w) {
		w = nil
	}
	t := now()
	return &Meter{w: w, total: total, now: now, start: t}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Update records that done bytes are done and redraws the line if the
// last drawing is old enough.
func (m *Meter) Update(done int64) {
	m.done = done
	if m.w == nil || m.failed {
		return
	}
	t := m.now()
	if m.drawn && t.Sub(m.last) < redraw {
		return
	}
	m.last = t
	m.draw(Line(done, m.total, t.Sub(m.start)))
}

// Finish replaces the line with a summary when ok, or ends it where it
// stopped (the caller reports the failure).
func (m *Meter) Finish(ok bool) {
	if m.w == nil || m.failed {
		return
	}
	if ok {
		m.draw(Summary(m.done, m.now().Sub(m.start)))
	}
	if m.drawn {
		fmt.Fprintln(m.w)
	}
}

func (m *Meter) draw(s string) {
	// \r returns to the start of the line; \x1b[K clears what a longer
	// earlier line left.
	if _, err := fmt.Fprintf(m.w, "\r%s\x1b[K", s); err != nil {
		m.failed = true
	}
	m.drawn = true
}

// Line is the progress line after done bytes in elapsed time.
func Line(done, total int64, elapsed time.Duration) string {
	rate := Rate(done, elapsed)
	if total <= 0 {
		return fmt.Sprintf("%s  %s", Bytes(done), RateString(rate))
	}
	pct := float64(done) / float64(total) * 100
	left := "--"
	if rate > 0 && done <= total {
		left = Duration(time.Duration(float64(total-done) / rate * float64(time.Second)))
	}
	return fmt.Sprintf("%s / %s  %3.0f%%  %s  %s left", Bytes(done), Bytes(total), pct, RateString(rate), left)
}

// Summary is the line left at the end.
func Summary(done int64, elapsed time.Duration) string {
	took := Duration(elapsed)
	if elapsed < time.Minute {
		took = fmt.Sprintf("%.1fs", elapsed.Seconds())
	}
	return fmt.Sprintf("%s in %s, %s", Bytes(done), took, RateString(Rate(done, elapsed)))
}

// Rate is bytes per second, 0 before any time has passed.
func Rate(done int64, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return float64(done) / elapsed.Seconds()
}

// Bytes formats n in binary units with one decimal: 1.5 GiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for ; v >= unit && i < 5; i++ {
		v /= unit
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}

// RateString formats bytes per second as Bytes does, per second.
func RateString(r float64) string { return Bytes(int64(r)) + "/s" }

// Duration formats d to the second: 45s, 3m05s, 2h07m.
func Duration(d time.Duration) string {
	s := int64((d + time.Second/2) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%dh%02dm", s/3600, s/60%60)
}
