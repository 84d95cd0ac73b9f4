package audit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// logDir makes a directory fit for a log: owned by the test's user,
// mode 0755.
func logDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "log")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rec is a record told apart by its volume name.
func rec(volume string) Record {
	return Record{
		Time:     time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
		Caller:   Caller{UID: 0, PID: 4242, Comm: "kmsagent"},
		Volume:   volume,
		Kind:     KindLUKS,
		CMK:      "0f6c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f",
		Provider: "local",
		Op:       OpUnwrap,
		Result:   ResultOK,
	}
}

func mustWrite(t testing.TB, l *Log, volume string) {
	t.Helper()
	if err := l.Write(context.Background(), rec(volume)); err != nil {
		t.Fatal(err)
	}
}

// volumes lists the volume names of recs, in order.
func volumes(recs []Record) []string {
	var v []string
	for _, r := range recs {
		v = append(v, r.Volume)
	}
	return v
}

func seq(prefix string, n int) []string {
	var v []string
	for i := range n {
		v = append(v, fmt.Sprintf("%s%d", prefix, i))
	}
	return v
}
