package worker

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestLimitMemory: a worker sets its soft memory limit unless GOMEMLIMIT
// chose one.
func TestLimitMemory(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	for _, tc := range []struct {
		env  string
		want int64
	}{{"", MemoryLimit}, {"64MiB", math.MaxInt64}} {
		t.Setenv("GOMEMLIMIT", tc.env)
		debug.SetMemoryLimit(math.MaxInt64)
		limitMemory()
		if got := debug.SetMemoryLimit(-1); got != tc.want {
			t.Errorf("GOMEMLIMIT=%q: limit %d, want %d", tc.env, got, tc.want)
		}
	}
}
