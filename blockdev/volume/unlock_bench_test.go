package volume

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
)

// latencyKMS stands for a KMS across a network: it unwraps with the
// embedded KMS, then holds the reply for a fixed delay. A real KMS does
// its part on another machine; here it runs in this process, on the
// CPUs the unlocks share, so it is done before the delay (while the
// unlocks wait anyway) and its CPU time is counted apart, on the
// goroutine's own thread (RUSAGE_THREAD), to be taken out of the
// unlocks' figure.
type latencyKMS struct {
	kmsclient.KMS
	delay time.Duration
	cpu   *atomic.Int64 // nanoseconds of CPU spent unwrapping
}

func (l latencyKMS) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	runtime.LockOSThread()
	t0 := threadCPU()
	k, err := l.KMS.Decrypt(ctx, keyID, wrapped, binding)
	l.cpu.Add(int64(threadCPU() - t0))
	runtime.UnlockOSThread()
	select {
	case <-time.After(l.delay):
	case <-ctx.Done():
		k.Wipe()
		return nil, ctx.Err()
	}
	return k, err
}

// threadCPU is the CPU time of the calling thread, user and system.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkConcurrentUnlock times Unlock (header, KMS unwrap with 50 ms
// latency, keyslot) of 1 and of 32 volumes at once, on this host's CPUs:
// the part of mount luks before device-mapper. The VM test measures the
// whole path, but under emulation CPU work costs tens of times more.
// x-single is the 32-volume batch's time over the single unlock's, the
// figure with a target (≤ 1.5); cpu-ms/unlock is the process's CPU time
// (user and system) per unlock without the embedded KMS's, which
// kms-cpu-ms/unlock shows; a busy machine inflates these less than the
// wall-clock times. serial is the CPU of unlocks one at a time, with no
// KMS delay.
//
//	go test -run XXX -bench ConcurrentUnlock ./blockdev/volume/
func BenchmarkConcurrentUnlock(b *testing.B) {
	ctx := context.Background()
	k := newKMS(b)
	kms := latencyKMS{KMS: k.store, delay: 50 * time.Millisecond, cpu: new(atomic.Int64)}
	const n = 32
	devs := make([]Device, n)
	for i := range devs {
		_, f := newFile(b, imageSize)
		if _, err := Format(ctx, f, k.store, FormatOptions{CreateOptions: CreateOptions{KeyID: k.key}}); err != nil {
			b.Fatal(err)
		}
		devs[i] = f
	}
	// One unlock after another against the KMS without its delay: the
	// CPU of an unlock on its own, the least noisy figure on a busy
	// machine.
	b.Run("serial", func(b *testing.B) {
		direct := latencyKMS{KMS: k.store, cpu: kms.cpu}
		cpu0, kms0 := cpuTime(b), kms.cpu.Load()
		i := 0
		for b.Loop() {
			vk, err := Unlock(ctx, devs[i%n], direct)
			if err != nil {
				b.Fatal(err)
			}
			vk.Wipe()
			i++
		}
		kmsCPU := time.Duration(kms.cpu.Load() - kms0)
		b.ReportMetric(float64(cpuTime(b)-cpu0-kmsCPU)/1e6/float64(b.N), "cpu-ms/unlock")
		b.ReportMetric(float64(kmsCPU)/1e6/float64(b.N), "kms-cpu-ms/unlock")
	})
	var single time.Duration
	for _, count := range []int{1, n} {
		b.Run(fmt.Sprintf("volumes=%d", count), func(b *testing.B) {
			var total time.Duration
			cpu0, kms0 := cpuTime(b), kms.cpu.Load()
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
			kmsCPU := time.Duration(kms.cpu.Load() - kms0)
			b.ReportMetric(float64(cpuTime(b)-cpu0-kmsCPU)/1e6/float64(b.N*count), "cpu-ms/unlock")
			b.ReportMetric(float64(kmsCPU)/1e6/float64(b.N*count), "kms-cpu-ms/unlock")
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
