package volume

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
)

// latencyKMS adds a fixed delay to every unwrap, like a KMS across a
// network.
type latencyKMS struct {
	kmsclient.KMS
	delay time.Duration
}

func (l latencyKMS) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	select {
	case <-time.After(l.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return l.KMS.Decrypt(ctx, keyID, wrapped, binding)
}

// BenchmarkConcurrentUnlock times Unlock (header, KMS unwrap with 50 ms
// latency, keyslot) of 1 and of 32 volumes at once, on this host's CPUs:
// the part of mount luks before device-mapper. The VM test measures the
// whole path, but under emulation CPU work costs tens of times more.
// x-single is the 32-volume batch's time over the single unlock's, the
// figure with a target (≤ 1.5); cpu-ms/unlock is the process's CPU time
// (user and system) per unlock, which a busy machine inflates less than
// the wall-clock times.
//
//	go test -run XXX -bench ConcurrentUnlock ./blockdev/volume/
func BenchmarkConcurrentUnlock(b *testing.B) {
	ctx := context.Background()
	k := newKMS(b)
	kms := latencyKMS{KMS: k.store, delay: 50 * time.Millisecond}
	const n = 32
	devs := make([]Device, n)
	for i := range devs {
		_, f := newFile(b, imageSize)
		if _, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{KeyID: k.key}}); err != nil {
			b.Fatal(err)
		}
		devs[i] = f
	}
	var single time.Duration
	for _, count := range []int{1, n} {
		b.Run(fmt.Sprintf("volumes=%d", count), func(b *testing.B) {
			var total time.Duration
			cpu0 := cpuTime(b)
			for b.Loop() {
				start := time.Now()
				var wg sync.WaitGroup
				errs := make([]error, count)
				for i := range count {
					wg.Go(func() {
						vk, err := Unlock(ctx, devs[i], kms)
						errs[i] = err
						if err == nil {
							vk.Wipe()
						}
					})
				}
				wg.Wait()
				total += time.Since(start)
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			per := total / time.Duration(b.N)
			b.ReportMetric(float64(per.Microseconds())/1e3, "ms/batch")
			b.ReportMetric(float64(cpuTime(b)-cpu0)/1e6/float64(b.N*count), "cpu-ms/unlock")
			if count == 1 {
				single = per
			} else if single > 0 {
				b.ReportMetric(float64(per)/float64(single), "x-single")
			}
		})
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
