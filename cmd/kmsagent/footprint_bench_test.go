package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/control"
	"kmsagent/agent/daemon"
	"kmsagent/agent/service"
	"kmsagent/agent/tstest"
)

// BenchmarkFootprint measures what the daemon costs a host, with the real
// `kmsagent run` and its share workers, against `kms serve` behind a
// proxy that adds 50 ms to every request (a KMS across a network):
//
//   - start-up: from exec to READY=1 on a stand-in for systemd's notify
//     socket, with 1 and with 32 auto shares (the volumes this host can
//     mount), the median of footprintRounds rounds, and their ratio; and
//     with 32 shares confined as under systemd (its own mount namespace,
//     every share mounted by a service worker and served by a share
//     worker, both started through a stand-in for the worker socket);
//   - the daemon's memory once start-up has settled (footprintSettle
//     after READY=1), VmRSS and Pss (its share of pages it has in common
//     with the workers, which run the same binary);
//   - each share's processes: the worker and its reaper (which unmounts
//     the share if the worker dies); the worker's memory idle and after a sequential write
//     (fsync'ed) and a read of footprintIO bytes through one share, with
//     the page cache of the file dropped in between so the read reaches
//     the worker.
//
// Targets (README): daemon idle RSS ≤ 25 MiB, worker RSS ≤ 40 MiB.
//
//	go test -run XXX -bench Footprint -benchtime 1x ./cmd/kmsagent/
func BenchmarkFootprint(b *testing.B) {
	tstest.NeedRoot(b, "to mount FUSE shares")
	tstest.NeedFUSE(b)
	bin := tstest.Kmsagent(b)
	dir := b.TempDir()
	addr, keyID := startKMSServe(b, bin, dir)
	endpoint := newLatencyProxy(b, addr, footprintLatency)

	sk := filepath.Join(dir, "sk")
	base := fmt.Sprintf(`[kms]
provider = "huaweicloud"
timeout = "10s"

[kms.huaweicloud]
endpoint = "http://%s"
project_id = "proj"
access_key = "AK1"
secret_key_file = %q

[agent]
socket = %q
state_dir = %q
audit_log = %q
cryptsetup_socket = %q
close_on_stop = true
`, endpoint, sk, filepath.Join(dir, "run", "agent.sock"), filepath.Join(dir, "state"), filepath.Join(dir, "audit.log"), filepath.Join(dir, "run", "cryptsetup.sock"))
	formatCfg := writeFile(b, filepath.Join(dir, "format.toml"), base, 0o600)
	vols := make([]string, footprintShares)
	var wg sync.WaitGroup
	errs := make(chan error, len(vols))
	sem := make(chan struct{}, 4)
	for i := range vols {
		cipher, plain := filepath.Join(dir, fmt.Sprintf("c%02d", i)), filepath.Join(dir, fmt.Sprintf("p%02d", i))
		if err := os.Mkdir(plain, 0o755); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { syscall.Unmount(plain, syscall.MNT_DETACH) })
		vols[i] = fmt.Sprintf("\n[[volume]]\nname = \"s%02d\"\ntype = \"fuse\"\nsource = %q\ntarget = %q\nauto = true\n", i, cipher, plain)
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if out, err := exec.Command(bin, "--config", formatCfg, "format", "fuse", cipher, "--key-id", keyID).CombinedOutput(); err != nil {
				errs <- fmt.Errorf("format %s: %v\n%s", cipher, err, out)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	cfg1 := writeFile(b, filepath.Join(dir, "one.toml"), base+vols[0], 0o600)
	cfgN := writeFile(b, filepath.Join(dir, "all.toml"), base+strings.Join(vols, ""), 0o600)
	sock := filepath.Join(dir, "run", "agent.sock")
	unshare := tstest.NeedTool(b, "unshare", "util-linux")
	workerSock := filepath.Join(dir, "worker.sock")
	tstest.WorkerSocket(b, workerSock, nil, bin, "worker-exec")
	confined := []string{unshare, "--mount", "--propagation", "slave", "--", bin, "--config", cfgN, "run", "--worker-socket", workerSock}

	for b.Loop() {
		var one, all, conf []time.Duration
		for range footprintRounds {
			r := startFootprintDaemon(b, []string{bin, "--config", cfg1, "run"}, sock, 1)
			one = append(one, r.ready)
			r.stop(b)
			r = startFootprintDaemon(b, []string{bin, "--config", cfgN, "run"}, sock, footprintShares)
			all = append(all, r.ready)
			r.stop(b)
			r = startFootprintDaemon(b, confined, sock, footprintShares)
			conf = append(conf, r.ready)
			r.stop(b)
		}
		r := startFootprintDaemon(b, []string{bin, "--config", cfgN, "run"}, sock, footprintShares)
		settled := time.Now().Add(footprintSettle)
		time.Sleep(time.Until(settled)) // idle by definition: nothing to wait for
		dm := readProcMem(b, r.cmd.Process.Pid)
		var idle, reapers []procMem
		var workerCPU, reaperCPU time.Duration
		for _, pid := range r.workers {
			reaper := reaperOf(b, pid)
			idle = append(idle, readProcMem(b, pid))
			reapers = append(reapers, readProcMem(b, reaper))
			workerCPU += procCPU(b, pid)
			reaperCPU += procCPU(b, reaper)
		}
		daemonCPU := procCPU(b, r.cmd.Process.Pid)
		target := filepath.Join(dir, "p00")
		wr, rd := shareIO(b, filepath.Join(target, "big"), footprintIO)
		busy := readProcMem(b, r.workers[0])
		r.stop(b)

		m1, mN, mC := median(one), median(all), median(conf)
		b.ReportMetric(ms(m1), "start-1-ms")
		b.ReportMetric(ms(mN), fmt.Sprintf("start-%d-ms", footprintShares))
		b.ReportMetric(float64(mN)/float64(m1), "start-ratio")
		b.ReportMetric(ms(mC), fmt.Sprintf("start-%d-confined-ms", footprintShares))
		b.ReportMetric(kibToMiB(dm.rss), "daemon-rss-MiB")
		b.ReportMetric(kibToMiB(dm.pss), "daemon-pss-MiB")
		b.ReportMetric(kibToMiB(maxOf(idle, func(m procMem) int64 { return m.rss })), "worker-idle-rss-MiB")
		b.ReportMetric(kibToMiB(busy.rss), "worker-io-rss-MiB")
		b.Logf("KMS latency %v; start-up to READY=1 (median of %d): 1 share %.0f ms %v, %d shares %.0f ms %v: %.2f×; %d shares confined %.0f ms %v: %.2f× unconfined",
			footprintLatency, footprintRounds, ms(m1), msList(one), footprintShares, ms(mN), msList(all), float64(mN)/float64(m1),
			footprintShares, ms(mC), msList(conf), float64(mC)/float64(mN))
		b.Logf("CPU (user+system) so far, the start-up's own: daemon %.0f ms; per share: worker %.0f ms, reaper %.0f ms (means over %d)",
			ms(daemonCPU), ms(workerCPU)/float64(len(r.workers)), ms(reaperCPU)/float64(len(r.workers)), len(r.workers))
		b.Logf("daemon, %v after READY=1 with %d shares: VmRSS %.1f MiB, Pss %.1f MiB, VmHWM %.1f MiB (target RSS ≤ 25 MiB)",
			footprintSettle, footprintShares, kibToMiB(dm.rss), kibToMiB(dm.pss), kibToMiB(dm.hwm))
		b.Logf("share worker idle (%d workers): VmRSS %.1f–%.1f MiB, Pss %.1f–%.1f MiB (target RSS ≤ 40 MiB)", len(idle),
			kibToMiB(minOf(idle, func(m procMem) int64 { return m.rss })), kibToMiB(maxOf(idle, func(m procMem) int64 { return m.rss })),
			kibToMiB(minOf(idle, func(m procMem) int64 { return m.pss })), kibToMiB(maxOf(idle, func(m procMem) int64 { return m.pss })))
		b.Logf("share reaper (one per share, unmounts when its worker dies): VmRSS %.1f–%.1f MiB, Pss %.1f–%.1f MiB",
			kibToMiB(minOf(reapers, func(m procMem) int64 { return m.rss })), kibToMiB(maxOf(reapers, func(m procMem) int64 { return m.rss })),
			kibToMiB(minOf(reapers, func(m procMem) int64 { return m.pss })), kibToMiB(maxOf(reapers, func(m procMem) int64 { return m.pss })))
		b.Logf("share worker after writing (fsync, %.0f MB/s) and reading (%.0f MB/s) %d MiB: VmRSS %.1f MiB, Pss %.1f MiB, VmHWM %.1f MiB",
			float64(footprintIO)/wr.Seconds()/1e6, float64(footprintIO)/rd.Seconds()/1e6,
			footprintIO>>20, kibToMiB(busy.rss), kibToMiB(busy.pss), kibToMiB(busy.hwm))
	}
}

const (
	footprintLatency = 50 * time.Millisecond
	footprintShares  = 32
	footprintRounds  = 3
	footprintSettle  = 5 * time.Second
	footprintIO      = 64 << 20
)

// startKMSServe creates the key "bench" in an embedded KMS and serves it
// on loopback TCP to access key AK1 (whose secret is dir/sk); it returns
// the address and the key's id.
func startKMSServe(b *testing.B, bin, dir string) (addr, keyID string) {
	b.Helper()
	sk := writeFile(b, filepath.Join(dir, "sk"), "Zm9vdHByaW50LWJlbmNoLXNlY3JldC1rZXk\n", 0o600)
	cfg := writeFile(b, filepath.Join(dir, "serve.toml"), fmt.Sprintf(`[kms.local]
state_dir = %q

[[kms.serve.client]]
access_key = "AK1"
secret_key_file = %q
keys = ["bench"]
`, filepath.Join(dir, "kms"), sk), 0o600)
	out, err := exec.Command(bin, "--config", cfg, "kms", "create-key", "--alias", "bench").Output()
	if err != nil {
		b.Fatalf("create-key: %v", err)
	}
	keyID = strings.TrimSpace(string(out))
	addr = freePort(b)
	cmd := exec.Command(bin, "--config", cfg, "kms", "serve", "--socket", "", "--listen", addr, "--project-id", "proj")
	var stderr tstest.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	tstest.WaitFor(b, 30*time.Second, "kms serve to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr, keyID
}

// newLatencyProxy forwards loopback TCP connections to addr, holding each
// piece a client sends for delay before passing it on, so every request
// costs one delay more, as to a KMS across a network. It returns its
// address.
func newLatencyProxy(b *testing.B, addr string, delay time.Duration) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go proxyConn(c, addr, delay)
		}
	}()
	return ln.Addr().String()
}

func proxyConn(c net.Conn, addr string, delay time.Duration) {
	defer c.Close()
	s, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer s.Close()
	type piece struct {
		at time.Time
		b  []byte
	}
	pieces := make(chan piece, 256)
	go func() {
		for p := range pieces {
			time.Sleep(time.Until(p.at.Add(delay))) // the latency being simulated
			if _, err := s.Write(p.b); err != nil {
				break
			}
		}
		s.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		io.Copy(c, s)
		c.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			pieces <- piece{time.Now(), slices.Clone(buf[:n])}
		}
		if err != nil {
			close(pieces)
			return
		}
	}
}

// footprintDaemon is a running `kmsagent run` whose auto shares are all
// mounted.
type footprintDaemon struct {
	cmd     *exec.Cmd
	ready   time.Duration
	workers []int
	targets []string
	stderr  *tstest.Buffer
}

// startFootprintDaemon starts the daemon with the command line argv.
func startFootprintDaemon(b *testing.B, argv []string, sock string, shares int) *footprintDaemon {
	b.Helper()
	notify := newNotifySocket(b, b.TempDir())
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path)
	d := &footprintDaemon{cmd: cmd, stderr: &tstest.Buffer{}}
	cmd.Stderr = d.stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if b.Failed() {
			b.Logf("daemon %q:\n%s", argv, d.stderr)
		}
	})
	notify.await(b, "READY=1")
	d.ready = time.Since(start)
	c := control.NewClient(sock)
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil {
		b.Fatalf("status: %v\n%s", err, d.stderr)
	}
	for _, v := range managed(st) {
		if v.State != daemon.StateMounted || v.WorkerPID == 0 {
			b.Fatalf("%s: %s (%s)\n%s", v.Name, v.State, v.LastError, d.stderr)
		}
		d.workers = append(d.workers, v.WorkerPID)
		d.targets = append(d.targets, v.Target)
	}
	if len(d.workers) != shares {
		b.Fatalf("%d shares mounted, want %d", len(d.workers), shares)
	}
	return d
}

// stop ends the daemon with SIGTERM; close_on_stop unmounts every share
// and ends its worker.
func (d *footprintDaemon) stop(b *testing.B) {
	b.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	if err := d.cmd.Wait(); err != nil {
		b.Fatalf("daemon: %v\n%s", err, d.stderr)
	}
	for _, pid := range d.workers {
		if !tstest.WaitExit(b, pid, 30*time.Second) {
			b.Fatalf("worker %d still runs after the daemon stopped", pid)
		}
	}
	for _, t := range d.targets {
		if tstest.Mounted(b, t) {
			b.Fatalf("%s still mounted after the daemon stopped", t)
		}
	}
}

// reaperOf returns the pid of the fuse-reaper that watches worker.
func reaperOf(tb testing.TB, worker int) int {
	tb.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		tb.Fatal(err)
	}
	want := fmt.Sprintf("\x00%s\x00--pid\x00%d\x00", service.ReaperCommand, worker)
	for _, p := range procs {
		cmdline, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(cmdline), want) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	tb.Fatalf("no %s for worker %d", service.ReaperCommand, worker)
	return 0
}

// shareIO writes size bytes to path in 1 MiB writes, fsyncs, drops the
// file's pages from the page cache and reads it back; it returns how long
// each half took.
func shareIO(b *testing.B, path string, size int) (write, read time.Duration) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	for done := 0; done < size; done += len(buf) {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	write = time.Since(start)
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	n, err := io.CopyBuffer(io.Discard, f, buf)
	if err != nil || n != int64(size) {
		b.Fatalf("read back %d bytes: %v", n, err)
	}
	return write, time.Since(start)
}

// procMem is a process's memory in KiB.
type procMem struct{ rss, pss, hwm int64 }

func readProcMem(b *testing.B, pid int) procMem {
	b.Helper()
	var m procMem
	for _, src := range []struct {
		file string
		keys map[string]*int64
	}{
		{"status", map[string]*int64{"VmRSS:": &m.rss, "VmHWM:": &m.hwm}},
		{"smaps_rollup", map[string]*int64{"Pss:": &m.pss}},
	} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, src.file))
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) >= 2 && src.keys[fs[0]] != nil {
				*src.keys[fs[0]], _ = strconv.ParseInt(fs[1], 10, 64)
			}
		}
		f.Close()
	}
	return m
}

// procCPU is the user and system CPU time pid has used.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command, which is in parentheses and may hold
	// spaces: state is the 3rd field of stat, utime the 14th.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func msList(d []time.Duration) string {
	var s []string
	for _, x := range d {
		s = append(s, strconv.Itoa(int(ms(x))))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func kibToMiB(kib int64) float64 { return float64(kib) / 1024 }

func maxOf(ms []procMem, f func(procMem) int64) int64 {
	var m int64
	for _, x := range ms {
		m = max(m, f(x))
	}
	return m
}

func minOf(ms []procMem, f func(procMem) int64) int64 {
	m := f(ms[0])
	for _, x := range ms {
		m = min(m, f(x))
	}
	return m
}
