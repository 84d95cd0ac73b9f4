package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kmsagent/agent/control"
	"kmsagent/agent/daemon"
	"kmsagent/agent/tstest"
)

// faultProxy stands between the daemon's workers and a real KMS (kms
// serve, speaking Huawei Cloud's KMS API, or local-kms, AWS's): it
// passes requests on, or injects the fault its mode names. It listens on a fixed loopback
// address, so that "down" (no listener: connections are refused) can end
// without the clients' configuration changing.
type faultProxy struct {
	t    *testing.T
	addr string

	mu       sync.Mutex
	mode     string // one of the fault modes below
	ln       net.Listener
	srv      *http.Server
	pass     http.Handler // the KMS
	throttle http.Handler // the KMS's answer when it throttles
	seen     int          // requests answered with a fault
}

// Fault modes.
const (
	modePass      = "pass"      // forward to the KMS
	modeDown      = "down"      // nothing listens: connection refused
	modeThrottle  = "throttle"  // the KMS's throttling answer
	modeGarbage   = "garbage"   // 200 with bytes that are not JSON
	modeTruncated = "truncated" // 200 with a JSON object cut short
	modeBadGate   = "badgate"   // 502 with a proxy's HTML page
	modeSlow      = "slow"      // no answer until the client gives up
	modeReset     = "reset"     // the connection closed without an answer
)

func newFaultProxy(t *testing.T, pass string, throttle http.Handler) *faultProxy {
	t.Helper()
	p := &faultProxy{t: t, addr: freePort(t), mode: modeDown, pass: reverseProxy(t, pass), throttle: throttle}
	t.Cleanup(func() { p.set(modeDown) })
	return p
}

func reverseProxy(t *testing.T, addr string) http.Handler {
	u, err := url.Parse("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	return httputil.NewSingleHostReverseProxy(u)
}

// set switches the fault: down closes the listener, any other mode
// makes sure it listens.
func (p *faultProxy) set(mode string) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.seen = mode, 0
	switch {
	case mode == modeDown && p.srv != nil:
		p.srv.Close() // and the listener, and every open connection
		p.srv, p.ln = nil, nil
	case mode != modeDown && p.srv == nil:
		var ln net.Listener
		// The port was just given up by an earlier listener: another
		// bind may take a moment to be allowed.
		if !tstest.Poll(10*time.Second, func() bool {
			var err error
			ln, err = net.Listen("tcp", p.addr)
			return err == nil
		}) {
			p.t.Fatalf("fault proxy: cannot listen on %s again", p.addr)
		}
		p.ln, p.srv = ln, &http.Server{Handler: p}
		go p.srv.Serve(ln)
	}
}

// faults is the number of requests answered with the current fault.
func (p *faultProxy) faults() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	mode := p.mode
	if mode != modePass {
		p.seen++
	}
	p.mu.Unlock()
	switch mode {
	case modePass:
		p.pass.ServeHTTP(w, r)
	case modeThrottle:
		p.throttle.ServeHTTP(w, r)
	case modeGarbage:
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.Write([]byte("\x00\xff\xfe<<not json at all>>\x1b[2J"))
	case modeTruncated:
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.Write([]byte(`{"key_id":"0d0466b0-e727-4d9c-b35d-f84bb474a37f","data_key":"`))
	case modeBadGate:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>\n"))
	case modeReset:
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			c.Close()
		}
	case modeSlow:
		// Hold the request until the client gives up (its timeout)
		// or the proxy closes.
		<-r.Context().Done()
	}
}

// kmsServe runs `kmsagent kms serve` on a loopback address with config
// cfg until the test ends.
func kmsServe(t *testing.T, bin, cfg string) string {
	t.Helper()
	addr := freePort(t)
	_, notify := startNotifying(t, "kms serve", bin, "--config", cfg, "kms", "serve", "--socket", "", "--listen", addr)
	notify.await(t, "READY=1")
	return addr
}

// kmsFaultHost is a daemon host whose KMS is reached through a
// faultProxy.
type kmsFaultHost struct {
	*daemonHost
	proxy      *faultProxy
	createKey  func() string // returns a new key's id
	disableKey func(id string)
	// The error kind of a disabled key; the messages that each fault's
	// error holds.
	disabledKind string
	msgs         map[string]string
}

// newHuaweiFaultHost is a kmsFaultHost whose KMS is Huawei Cloud's API
// served by kms serve on loopback TCP; a second kms serve on the same
// keys, with a rate limit that is used up, answers for the throttling
// fault (429 APIGW.0308 from its own limiter).
func newHuaweiFaultHost(t *testing.T) *kmsFaultHost {
	t.Helper()
	bin := tstest.Kmsagent(t)
	kdir := t.TempDir()
	sk := writeFile(t, filepath.Join(kdir, "sk"), "ZmF1bHQtdGVzdHMtc2VjcmV0LWtleQ==\n", 0o600)
	local := fmt.Sprintf("[kms.local]\nstate_dir = %q\n", filepath.Join(kdir, "kms"))
	serveCfg := func(name string, rps float64, burst int) string {
		return writeFile(t, filepath.Join(kdir, name+".toml"), local+fmt.Sprintf(`
[kms.serve]
project_id = "proj"
requests_per_second = %v
burst = %d

[[kms.serve.client]]
access_key = "AK1"
secret_key_file = %q
keys = ["*"]
`, rps, burst, sk), 0o600)
	}
	localCfg := writeFile(t, filepath.Join(kdir, "local.toml"), local, 0o600)
	admin := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"--config", localCfg, "kms"}, args...)...).Output()
		if err != nil {
			t.Fatalf("kmsagent kms %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	h := &kmsFaultHost{
		createKey:    func() string { return admin("create-key") },
		disableKey:   func(id string) { admin("disable-key", id) },
		disabledKind: "key_disabled",
		msgs: map[string]string{
			modeThrottle: "APIGW.0308", modeGarbage: "malformed KMS response", modeTruncated: "malformed KMS response",
			modeBadGate: "HTTP 502", modeSlow: "no answer within 1s", modeReset: `Post "http://`,
		},
	}
	pass := kmsServe(t, bin, serveCfg("serve", 1000, 1000))
	// One request a quarter of an hour: the first passes, all
	// others get 429 APIGW.0308 from kms serve's rate limiter.
	limited := kmsServe(t, bin, serveCfg("limited", 1.0/900, 1))
	h.proxy = newFaultProxy(t, pass, reverseProxy(t, limited))
	h.daemonHost = newDaemonHostKMS(t, func(string) string {
		return fmt.Sprintf("[kms]\nprovider = \"huaweicloud\"\ntimeout = \"1s\"\n\n[kms.huaweicloud]\nendpoint = \"http://%s\"\nproject_id = \"proj\"\nregion = \"test-1\"\naccess_key = \"AK1\"\nsecret_key_file = %q\n",
			h.proxy.addr, sk)
	}, "retry_min_delay = \"300ms\"\nretry_max_delay = \"1s\"\n")
	// Use up the limited server's one request (formatting a share
	// asks for a data key; whether it then fails does not matter).
	h.proxy.set(modeThrottle)
	out, _ := exec.Command(h.bin, "--config", h.cfg, "format", "fuse", filepath.Join(kdir, "burn"), "--key-id", h.createKey()).CombinedOutput()
	if h.proxy.faults() == 0 {
		t.Fatalf("the rate-limited KMS was not asked: %s", out)
	}
	h.proxy.set(modePass)
	return h
}

// newAWSFaultHost is a kmsFaultHost whose KMS is AWS KMS's API served by
// local-kms. local-kms does not throttle: the proxy answers as AWS does
// (HTTP 400, ThrottlingException).
func newAWSFaultHost(t *testing.T) *kmsFaultHost {
	t.Helper()
	// No host AWS setup: static credentials (local-kms checks no
	// signature), no shared files, no IMDS. The daemon and its
	// workers inherit this environment.
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIDKMSAGENTTEST", "AWS_SECRET_ACCESS_KEY": "kmsagent-test-secret",
		"AWS_CONFIG_FILE": filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_PROFILE": "", "AWS_REGION": "", "AWS_DEFAULT_REGION": "",
		"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_KMS": "", "AWS_MAX_ATTEMPTS": "", "AWS_SESSION_TOKEN": "",
	} {
		t.Setenv(k, v)
	}
	const region = "eu-west-1"
	endpoint := tstest.StartLocalKMS(t, "111122223333", region)
	call := func(op string, in any) map[string]any {
		t.Helper()
		body, _ := json.Marshal(in)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, endpoint+"/", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		req.Header.Set("X-Amz-Target", "TrentService."+op)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("local-kms %s: %v", op, err)
		}
		defer resp.Body.Close()
		var out map[string]any
		// Some operations (DisableKey) answer with an empty body.
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil && err != io.EOF || resp.StatusCode != http.StatusOK {
			t.Fatalf("local-kms %s: HTTP %d %v %v", op, resp.StatusCode, err, out)
		}
		return out
	}
	h := &kmsFaultHost{
		createKey: func() string {
			md, _ := call("CreateKey", map[string]any{})["KeyMetadata"].(map[string]any)
			id, _ := md["KeyId"].(string)
			if id == "" {
				t.Fatal("local-kms CreateKey: no key id")
			}
			return id
		},
		disableKey:   func(id string) { call("DisableKey", map[string]any{"KeyId": id}) },
		disabledKind: "key_disabled",
		msgs: map[string]string{
			modeThrottle: "ThrottlingException", modeGarbage: "deserialization failed", modeTruncated: "deserialization failed",
			modeBadGate: "HTTP 502", modeSlow: "no answer within 1s", modeReset: `Post "http://`,
		},
	}
	h.proxy = newFaultProxy(t, strings.TrimPrefix(endpoint, "http://"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.Header().Set("X-Amzn-Requestid", "00000000-0000-4000-8000-000000000000")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"__type":"ThrottlingException","message":"Rate exceeded"}`))
	}))
	h.daemonHost = newDaemonHostKMS(t, func(string) string {
		return fmt.Sprintf("[kms]\nprovider = \"aws\"\ntimeout = \"1s\"\n\n[kms.aws]\nregion = %q\nendpoint = \"http://%s\"\n", region, h.proxy.addr)
	}, "retry_min_delay = \"300ms\"\nretry_max_delay = \"1s\"\n")
	h.proxy.set(modePass)
	return h
}

// share formats a share under key through the daemon's KMS and returns
// its [[volume]] table, auto, on a new mount point.
func (h *kmsFaultHost) share(name, key string) string {
	h.t.Helper()
	cipher, plain := filepath.Join(h.dir, name+"-cipher"), filepath.Join(h.dir, name)
	h.cli("format", "fuse", cipher, "--key-id", key)
	if err := os.Mkdir(plain, 0o755); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { syscall.Unmount(plain, syscall.MNT_DETACH) })
	return volumeTOML(name, "fuse", cipher, plain)
}

func volumeTOML(name, typ, source, target string) string {
	s := fmt.Sprintf("\n[[volume]]\nname = %q\ntype = %q\nsource = %q\nauto = true\n", name, typ, source)
	if target != "" {
		s += fmt.Sprintf("target = %q\n", target)
	}
	return s
}

func volumesByName(t *testing.T, c *control.Client) map[string]daemon.VolumeInfo {
	t.Helper()
	st, err := c.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]daemon.VolumeInfo{}
	for _, v := range st.Volumes {
		m[v.Name] = v
	}
	return m
}

// auditRecord is what the fault tests read of an audit record.
type auditRecord struct{ Volume, Op, Result, CMK string }

// auditResults reads the audit log's records of op for volume, in order.
func auditResults(t *testing.T, path, volume, op string) []auditRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r auditRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if r.Volume == volume && r.Op == op {
			out = append(out, r)
		}
	}
	return out
}

// TestRunDaemonKMSFaults runs the real daemon against Huawei Cloud's KMS
// API (kms serve) through a proxy that injects faults, with real share
// workers: the KMS down at start (READY=1 all the same, the volume
// retrying, then mounted when the KMS returns, without a restart), then
// for a volume mounted through the control API the KMS throttling (429
// from kms serve's own rate limiter), answering garbage, cut short or
// with a proxy's error page, and answering slower than kms.timeout. Each
// fault leaves the volume retrying with the fault's kind, the same in
// the status, the STATUS= line, the metrics and the audit log, and the
// volume comes up once the KMS answers again. A disabled key fails at
// once and is never retried.
func TestRunDaemonKMSFaults(t *testing.T) {
	testKMSFaults(t, newHuaweiFaultHost(t))
}

// TestRunDaemonKMSFaultsAWS is TestRunDaemonKMSFaults with the aws
// provider against local-kms.
func TestRunDaemonKMSFaultsAWS(t *testing.T) {
	testKMSFaults(t, newAWSFaultHost(t))
}

func testKMSFaults(t *testing.T, h *kmsFaultHost) {
	off, dataKey := h.createKey(), h.createKey()
	h.addVolumes(h.share("data", dataKey) + h.share("off", off))
	h.disableKey(off)
	plain := filepath.Join(h.dir, "data")
	auditLog := filepath.Join(h.dir, "audit.log")

	// Down at start.
	h.proxy.set(modeDown)
	_, notify := startDaemon(t, h.bin, h.cfg)
	notify.await(t, "READY=1")
	c := control.NewClient(h.sock)
	defer c.Close()
	vs := volumesByName(t, c)
	for _, name := range []string{"data", "off"} {
		if v := vs[name]; v.State != daemon.StateRetrying || v.ErrorKind != "kms_unavailable" || v.Retries < 1 || !strings.Contains(v.LastError, "volume "+name) {
			t.Fatalf("%s with the KMS down: %+v, want retrying (kms_unavailable) naming the volume", name, v)
		}
	}
	if m := notify.await(t, "STATUS="); !strings.Contains(m, "data (KMS unavailable, retrying)") {
		// The first STATUS= after READY=1 is the current line.
		t.Fatalf("status line with the KMS down: %q", m)
	}
	// It keeps retrying with backoff.
	tstest.WaitFor(t, 30*time.Second, "data to be retried", func() bool { return volumesByName(t, c)["data"].Retries >= 2 })

	h.proxy.set(modePass)
	tstest.WaitFor(t, 60*time.Second, "data to be mounted when the KMS returns", func() bool {
		return volumesByName(t, c)["data"].State == daemon.StateMounted
	})
	if !tstest.Mounted(t, plain) {
		t.Fatal("status says mounted; the kernel does not")
	}
	tstest.WaitFor(t, 60*time.Second, "off to fail on its disabled key", func() bool {
		return volumesByName(t, c)["off"].State == daemon.StateFailed
	})
	if off := volumesByName(t, c)["off"]; off.ErrorKind != h.disabledKind || off.NextRetry != (time.Time{}) {
		t.Fatalf("off: %+v, want failed on %s with no retry scheduled", off, h.disabledKind)
	}
	offAttempts := len(auditResults(t, auditLog, "off", "unwrap"))

	for _, tt := range []struct {
		mode, kind, line string
	}{
		{modeThrottle, "kms_throttled", "KMS throttled"},
		{modeGarbage, "kms_unavailable", "KMS unavailable"},
		{modeTruncated, "kms_unavailable", "KMS unavailable"},
		{modeBadGate, "kms_unavailable", "KMS unavailable"},
		{modeSlow, "kms_unavailable", "KMS unavailable"},
		{modeReset, "kms_unavailable", "KMS unavailable"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			msg := h.msgs[tt.mode]
			if err := c.Unmount(t.Context(), "data", false); err != nil {
				t.Fatal(err)
			}
			notify.drain()
			h.proxy.set(tt.mode)
			_, err := c.Mount(t.Context(), "data")
			if err == nil || !strings.Contains(err.Error(), msg) {
				t.Fatalf("mount with the KMS %s: %v, want an error with %q", tt.mode, err, msg)
			}
			t.Logf("%s: %v", tt.mode, err)
			calls := h.proxy.faults()
			v := volumesByName(t, c)["data"]
			if v.State != daemon.StateRetrying || v.ErrorKind != tt.kind || !strings.Contains(v.LastError, msg) || v.NextRetry.IsZero() {
				t.Fatalf("data with the KMS %s: %+v, want retrying (%s)", tt.mode, v, tt.kind)
			}
			// The daemon retries, not its workers: one KMS call per
			// attempt (and maybe one of an attempt under way), so
			// the status counts every call.
			if calls == 0 || calls > v.Retries+1 {
				t.Fatalf("%d KMS calls for %d attempts", calls, v.Retries)
			}
			health, err := c.Health(t.Context())
			if err != nil || !strings.Contains(health.Status, "data ("+tt.line+", retrying)") {
				t.Fatalf("status line: %q %v, want data (%s, retrying)", health.Status, err, tt.line)
			}
			// systemd was told the same since the unmount (await
			// fails the test after a bound).
			for m := ""; !strings.Contains(m, "data ("+tt.line+", retrying)"); {
				m = notify.await(t, "STATUS=")
			}
			metrics, err := c.Metrics(t.Context())
			if err != nil || !strings.Contains(metrics, fmt.Sprintf(`kmsagent_errors_total{kind=%q}`, tt.kind)) {
				t.Fatalf("metrics do not count %s errors: %v\n%s", tt.kind, err, metrics)
			}
			// The audit record of the failed key use has the
			// same kind, and its CMK.
			if res := auditResults(t, auditLog, "data", "unwrap"); len(res) == 0 || res[len(res)-1].Result != tt.kind || !strings.Contains(res[len(res)-1].CMK, dataKey) {
				t.Fatalf("audit records of data: %+v, want the last %s with CMK %s", res, tt.kind, dataKey)
			}
			h.proxy.set(modePass)
			tstest.WaitFor(t, 60*time.Second, "data to be mounted when the KMS answers again", func() bool {
				return volumesByName(t, c)["data"].State == daemon.StateMounted
			})
			if !tstest.Mounted(t, plain) {
				t.Fatal("status says mounted; the kernel does not")
			}
		})
	}
	// The disabled key was tried once, after the KMS came back, never
	// again.
	if off := volumesByName(t, c)["off"]; off.State != daemon.StateFailed || len(auditResults(t, auditLog, "off", "unwrap")) != offAttempts {
		t.Fatalf("off was retried: %+v", off)
	}
}

// TestRunDaemonBadPlaces runs the real daemon with volumes whose source
// or mount point is wrong: a share whose cipher directory is missing,
// LUKS2 volumes on disks that are not there (by EVS id and by path), and
// shares whose mount point is a symlink to a directory or a regular
// file. Each fails at once with an error naming the volume and what is
// wrong, nothing is mounted through the symlink, and a good share next
// to them is mounted all the same.
func TestRunDaemonBadPlaces(t *testing.T) {
	h := newDaemonHost(t)
	key := strings.TrimSpace(h.cli("kms", "create-key", "--alias", "k"))
	format := func(name string) string {
		cipher := filepath.Join(h.dir, name+"-cipher")
		h.cli("format", "fuse", cipher, "--key-id", key)
		return cipher
	}
	mkdir := func(name string) string {
		p := filepath.Join(h.dir, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Unmount(p, syscall.MNT_DETACH) })
		return p
	}
	elsewhere := mkdir("elsewhere")
	link := filepath.Join(h.dir, "link")
	if err := os.Symlink(elsewhere, link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(link, syscall.MNT_DETACH|unix.UMOUNT_NOFOLLOW) })
	file := writeFile(t, filepath.Join(h.dir, "file"), "not a directory\n", 0o644)

	tests := []struct {
		name, typ, source, target string
		msg                       string // in the error
	}{
		{"nosrc", "fuse", filepath.Join(h.dir, "missing-cipher"), mkdir("nosrc"), "cipher directory: stat " + filepath.Join(h.dir, "missing-cipher") + ": no such file or directory"},
		{"nodisk", "luks", "evs:0d0466b0-e727-4d9c-b35d-f84bb474a37f", "", "0d0466b0-e727-4d9c-b"},
		{"nodev", "luks", "/dev/disk/by-id/virtio-kmsagent-missing", "", "device: stat /dev/disk/by-id/virtio-kmsagent-missing: no such file or directory"},
		{"link", "fuse", format("link"), link, "symlink"},
		{"file", "fuse", format("file"), file, "not a directory"},
	}
	vols := volumeTOML("good", "fuse", format("good"), mkdir("good"))
	for _, tt := range tests {
		vols += volumeTOML(tt.name, tt.typ, tt.source, tt.target)
	}
	h.addVolumes(vols)
	_, notify := startDaemon(t, h.bin, h.cfg)
	notify.await(t, "READY=1")
	status := notify.await(t, "STATUS=")
	c := control.NewClient(h.sock)
	defer c.Close()
	vs := volumesByName(t, c)
	if v := vs["good"]; v.State != daemon.StateMounted || !tstest.Mounted(t, filepath.Join(h.dir, "good")) {
		t.Fatalf("good: %+v, want mounted next to the failing volumes", v)
	}
	for _, tt := range tests {
		v := vs[tt.name]
		t.Logf("%s: %s", tt.name, v.LastError)
		if v.State != daemon.StateFailed || !v.NextRetry.IsZero() || !strings.HasPrefix(v.LastError, "volume "+tt.name+": ") || !strings.Contains(v.LastError, tt.msg) {
			t.Errorf("%s: %+v, want failed, not retried, with an error naming the volume and %q", tt.name, v, tt.msg)
		}
		if strings.Contains(v.LastError, "\n") {
			t.Errorf("%s: the error is not one line: %q", tt.name, v.LastError)
		}
		if !strings.Contains(status, tt.name+" (") {
			t.Errorf("the status line does not name %s: %q", tt.name, status)
		}
	}
	if tstest.Mounted(t, elsewhere) {
		t.Fatal("the share was mounted through the symlink")
	}
}
