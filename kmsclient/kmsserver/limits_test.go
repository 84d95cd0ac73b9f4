package kmsserver_test

import (
	"context"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"kmsagent/kmsclient/huaweicloud"
	"kmsagent/kmsclient/kmsserver"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestSlowClients opens many idle and slowloris connections, far beyond
// the connection cap, and checks that the server holds no more than the
// cap of them (file descriptors of this process: the attackers' own ends
// plus at most the cap), its heap stays small, and a legitimate client is
// still served. Loopback only; every loop is bounded and the attack ends
// with the test.
func TestSlowClients(t *testing.T) {
	const (
		maxConns  = 16
		attackers = 256
	)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	limits := kmsserver.Limits{MaxConns: maxConns, ReadHeaderTimeout: 150 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, IdleTimeout: 150 * time.Millisecond}
	s := serveOn(t, ln, authOpts(), limits, nil)
	info, err := s.store.CreateKey(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	baseFDs := openFDs(t)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	conns := make([]net.Conn, 0, attackers)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range attackers {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("attacker %d: %v", i, err)
		}
		conns = append(conns, c)
		if i%2 == 1 {
			// Slowloris: a header line now and then, never the end of
			// the header; at most 200 lines.
			wg.Go(func() {
				c.Write([]byte("POST /v1.0/p/kms/describe-key HTTP/1.1\r\nHost: x\r\n"))
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for range 200 {
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
					if _, err := c.Write([]byte("X-Slow: y\r\n")); err != nil {
						return
					}
				}
			})
		}
	}

	// Sample this process's descriptors while the legitimate client waits.
	peak := make(chan int, 1)
	sampling, stopSampling := context.WithCancel(ctx)
	wg.Go(func() {
		max := 0
		for {
			max = maxInt(max, openFDs(t))
			select {
			case <-sampling.Done():
				peak <- max
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})

	c, err := huaweicloud.New(context.Background(), huaweicloud.Config{
		Endpoint: "http://" + ln.Addr().String(), ProjectID: testProject, AccessKey: testAK,
		SecretKeyFile: skFile(t, testSK), Timeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.DescribeKey(context.Background(), info.ID); err != nil {
		t.Fatalf("legitimate client during the attack: %v", err)
	}
	waited := time.Since(start)
	stopSampling()
	maxFDs := <-peak
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d attackers, cap %d: legitimate request served after %v; peak fds %d (base %d); heap in use grew %d KiB",
		attackers, maxConns, waited.Round(time.Millisecond), maxFDs, baseFDs, grown>>10)
	// The attackers' ends, the server's capped ends, the client's
	// connection and some slack for the runtime.
	if limit := baseFDs + attackers + maxConns + 8; maxFDs > limit {
		t.Errorf("peak of %d open descriptors, want at most %d: the server holds more connections than its cap", maxFDs, limit)
	}
	if grown > 32<<20 {
		t.Errorf("heap grew by %d MiB", grown>>20)
	}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// TestIdleConnectionsYield: keep-alive connections left idle by clients
// that are done do not hold the cap against a new client: the server
// closes one of them instead of making the newcomer wait for IdleTimeout.
func TestIdleConnectionsYield(t *testing.T) {
	const maxConns = 2
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := serveOn(t, ln, authOpts(), kmsserver.Limits{MaxConns: maxConns, IdleTimeout: time.Hour}, nil)
	info, err := s.store.CreateKey(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	sk := skFile(t, testSK)
	newClient := func() *huaweicloud.Client {
		c, err := huaweicloud.New(context.Background(), huaweicloud.Config{
			Endpoint: "http://" + ln.Addr().String(), ProjectID: testProject, AccessKey: testAK, SecretKeyFile: sk,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Each client has its own pool, so each leaves a connection open.
	for range maxConns + 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := newClient().DescribeKey(ctx, info.ID)
		cancel()
		if err != nil {
			t.Fatalf("a client after %d idle connections: %v", maxConns, err)
		}
	}
}
