package kmsserver

import (
	"encoding/binary"
	"net/http"
	"strings"
	"testing"
	"time"

	"kmsagent/kmsclient/huaweicloud/signer"
)

func keyOf(i int) replayKey {
	var k replayKey
	binary.BigEndian.PutUint64(k[:], uint64(i))
	return k
}

// TestReplayCacheBounds: the cache holds at most max signatures, refuses
// new ones when full instead of forgetting live ones, and frees them as
// their window closes.
func TestReplayCacheBounds(t *testing.T) {
	const max = 1000
	c := newReplayCache(max)
	now := time.Date(2026, 1, 1, 12, 0, 30, 0, time.UTC)
	window := 15 * time.Minute
	// Dates spread over the last ten minutes: expiries 5 to 15 minutes on.
	for i := range max {
		date := now.Add(-time.Duration(i%600) * time.Second)
		if r := c.add(keyOf(i), date.Add(window), now); r != replayAdded {
			t.Fatalf("add %d: %v", i, r)
		}
	}
	if r := c.add(keyOf(max), now.Add(window), now); r != replayFull {
		t.Fatalf("add beyond max: %v, want full", r)
	}
	if r := c.add(keyOf(7), now.Add(window), now); r != replaySeen {
		t.Fatalf("add of a held key: %v, want seen", r)
	}
	if c.n != max {
		t.Fatalf("n = %d, want %d", c.n, max)
	}
	// Six minutes on, the signatures dated more than nine minutes ago
	// have left the window.
	later := now.Add(6 * time.Minute)
	if !c.seen(keyOf(0), later) {
		t.Fatal("a signature still in its window was forgotten")
	}
	if c.seen(keyOf(599), later) {
		t.Fatal("a signature out of its window is still held")
	}
	if c.n >= max {
		t.Fatalf("nothing expired: n = %d", c.n)
	}
	if r := c.add(keyOf(max), later.Add(window), later); r != replayAdded {
		t.Fatalf("add after expiry: %v", r)
	}
	// Everything is gone once the whole window has passed.
	end := later.Add(window + time.Minute)
	c.seen(keyOf(0), end)
	if c.n != 0 || len(c.buckets) != 0 {
		t.Fatalf("after the window: n = %d, %d buckets", c.n, len(c.buckets))
	}
	// forget undoes an add.
	c.add(keyOf(1), end.Add(window), end)
	c.forget(keyOf(1), end.Add(window))
	if c.seen(keyOf(1), end) || c.n != 0 {
		t.Fatal("forget left the key")
	}
}

// BenchmarkReplayCacheMemory reports the heap a full default-sized cache
// takes.
func BenchmarkReplayCacheMemory(b *testing.B) {
	now := time.Now()
	for b.Loop() {
		c := newReplayCache(DefaultReplayCache)
		for i := range DefaultReplayCache {
			c.add(keyOf(i), now.Add(time.Duration(i%900)*time.Second), now)
		}
	}
}

// FuzzSignatureOf: any Authorization and X-Sdk-Date headers give a key
// and date or an error, never a panic.
func FuzzSignatureOf(f *testing.F) {
	f.Add("SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=9e0d4ea0b4ba7ab9f1e4e2b5bbd1c2bdf7f3b0b6d4b2a2e0e6b9d0b8b7c1f2a3", "20260101T000000Z")
	f.Add("Signature=", "")
	f.Add("Signature=zz,Signature=00", "2026")
	f.Fuzz(func(t *testing.T, auth, date string) {
		r, _ := http.NewRequest(http.MethodPost, "http://localhost/", nil)
		r.Header.Set("Authorization", auth)
		r.Header.Set(signer.HeaderDate, date)
		_, d, err := signatureOf(r)
		if err != nil {
			return
		}
		if want, perr := time.Parse(signer.DateFormat, date); perr != nil || !d.Equal(want) || !strings.Contains(auth, "Signature=") {
			t.Fatalf("accepted %q with date %q as %v", auth, date, d)
		}
	})
}
