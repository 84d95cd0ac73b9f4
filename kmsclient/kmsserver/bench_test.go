package kmsserver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkUnwrap measures decrypt-datakey through the server with the
// huaweicloud client (signing, HTTP on loopback, verification, unwrap),
// with several concurrent clients. It reports throughput and latency
// percentiles; the direct store call is the baseline.
//
//	go test -run XXX -bench Unwrap ./kmsclient/kmsserver/
func BenchmarkUnwrap(b *testing.B) {
	ctx := context.Background()
	for _, clients := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("serve/clients=%d", clients), func(b *testing.B) {
			f := newBenchFixture(b)
			c := f.client(b, "")
			info, err := f.store.CreateKey(ctx, "", "")
			if err != nil {
				b.Fatal(err)
			}
			dk, err := c.GenerateDataKey(ctx, info.ID, 32, "vol")
			if err != nil {
				b.Fatal(err)
			}
			dk.Plaintext.Wipe()
			lat := make([][]time.Duration, clients)
			var wg sync.WaitGroup
			per := max(b.N/clients, 1)
			b.ResetTimer()
			for w := range clients {
				wg.Go(func() {
					for range per {
						start := time.Now()
						k, err := c.Decrypt(ctx, info.ID, dk.Wrapped, "vol")
						if err != nil {
							b.Error(err)
							return
						}
						k.Wipe()
						lat[w] = append(lat[w], time.Since(start))
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) == 0 {
				return
			}
			b.ReportMetric(float64(len(all))/b.Elapsed().Seconds(), "unwraps/s")
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		})
	}
	b.Run("direct-store", func(b *testing.B) {
		f := newBenchFixture(b)
		info, _ := f.store.CreateKey(ctx, "", "")
		dk, err := f.store.GenerateDataKey(ctx, info.ID, 32, "vol")
		if err != nil {
			b.Fatal(err)
		}
		dk.Plaintext.Wipe()
		b.ResetTimer()
		for b.Loop() {
			k, err := f.store.Decrypt(ctx, info.ID, dk.Wrapped, "vol")
			if err != nil {
				b.Fatal(err)
			}
			k.Wipe()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "unwraps/s")
	})
}

// newBenchFixture logs in text, as kms serve does, to nowhere, and lifts
// the rate limit, which would otherwise be what is measured.
func newBenchFixture(b *testing.B) *fixture {
	opts := authOpts()
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.RequestsPerSecond = 1e9
	return newFixture(b, opts)
}
