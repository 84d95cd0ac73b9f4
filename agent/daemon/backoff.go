package daemon

import (
	"math/rand/v2"
	"time"
)

// Backoff is the delay before each retry of a volume: exponential from
// Base, capped at Max, with "equal jitter" (a random point in the upper
// half), so hosts that lost the KMS together do not come back in step
// and every volume still waits at least half the nominal delay.
type Backoff struct {
	Base time.Duration // first delay; zero: 2s
	Max  time.Duration // cap; zero: 5m
	// Rand returns a number in [0, 1); nil: math/rand/v2.
	Rand func() float64
}

// Delay is the wait after the attempt-th failed attempt (0 for the
// first).
func (b Backoff) Delay(attempt int) time.Duration {
	base, max := b.Base, b.Max
	if base <= 0 {
		base = 2 * time.Second
	}
	if max <= 0 {
		max = 5 * time.Minute
	}
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	return d/2 + time.Duration(r()*float64(d/2))
}
