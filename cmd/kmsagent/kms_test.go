package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/tstest"
)

// cli runs kmsagent in-process.
type cli struct {
	t      *testing.T
	config string
}

type result struct {
	code           int
	stdout, stderr string
}

func (c *cli) run(args ...string) result {
	c.t.Helper()
	return c.runCtx(context.Background(), args...)
}

func (c *cli) runCtx(ctx context.Context, args ...string) result {
	var out, errb tstest.Buffer
	env := &cliEnv{stdout: &out, stderr: &errb, stdin: strings.NewReader("")}
	if c.config != "" {
		args = append([]string{"--config", c.config}, args...)
	}
	code := run(ctx, env, args)
	return result{code, out.String(), errb.String()}
}

func writeFile(t testing.TB, path, data string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func localCLI(t *testing.T) *cli {
	dir := t.TempDir()
	cfg := writeFile(t, filepath.Join(dir, "agent.toml"), fmt.Sprintf("[kms.local]\nstate_dir = %q\n", filepath.Join(dir, "kms")), 0o600)
	return &cli{t: t, config: cfg}
}

func TestKeyLifecycle(t *testing.T) {
	c := localCLI(t)
	r := c.run("kms", "create-key", "--alias", "db", "--description", "database disks")
	if r.code != 0 {
		t.Fatalf("create-key: %d %s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	if len(id) != 36 || strings.Contains(id, "\n") {
		t.Fatalf("create-key printed %q, want the key id alone", r.stdout)
	}
	steps := []struct {
		args    []string
		code    int
		stdout  string // substring
		stderrs string // substring
	}{
		{[]string{"kms", "list-keys"}, 0, "database disks", ""},
		{[]string{"kms", "describe-key", "db", "--json"}, 0, `"state": "Enabled"`, ""},
		{[]string{"kms", "rotate-key", id}, 0, "", ""},
		{[]string{"kms", "disable-key", "alias/db"}, 0, "", ""},
		{[]string{"kms", "describe-key", id}, 0, "Disabled", ""},
		{[]string{"kms", "enable-key", "db"}, 0, "", ""},
		{[]string{"kms", "schedule-deletion", "db", "--days", "3"}, 1, "", "want 7 to 1096"},
		{[]string{"kms", "schedule-deletion", "db", "--days", "7"}, 0, "", ""},
		{[]string{"kms", "describe-key", "db"}, 0, "PendingDeletion", ""},
		{[]string{"kms", "cancel-deletion", "db"}, 0, "", ""},
		{[]string{"kms", "describe-key", "db"}, 0, "Disabled", ""},
		{[]string{"kms", "describe-key", "nope"}, exitKey, "", "not found"},
		{[]string{"kms", "create-key", "extra"}, 2, "", "create-key"},
		{[]string{"kms", "frobnicate"}, 2, "", "unknown command"},
		{[]string{"kms", "list-keys", "--bogus"}, 2, "", "bogus"},
	}
	for _, s := range steps {
		r := c.run(s.args...)
		if r.code != s.code || !strings.Contains(r.stdout, s.stdout) || !strings.Contains(r.stderr, s.stderrs) {
			t.Fatalf("%v: code %d stdout %q stderr %q; want code %d, stdout with %q, stderr with %q", s.args, r.code, r.stdout, r.stderr, s.code, s.stdout, s.stderrs)
		}
		if r.code != 0 && strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Errorf("%v: error is not one line: %q", s.args, r.stderr)
		}
	}
	r = c.run("kms", "list-keys", "--json")
	var keys []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &keys); err != nil || len(keys) != 1 || keys[0]["versions"].(float64) != 2 {
		t.Fatalf("list-keys --json: %v %q", err, r.stdout)
	}
}

func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, config, want string
	}{
		{"unknown key", "[kms.local]\nstate_dri = \"/x\"\n", "unknown key kms.local.state_dri"},
		{"wrong type", "[kms]\ntimeout = 5\n", "kms.timeout"},
		{"missing file", "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".toml")
			if tt.config != "" {
				writeFile(t, path, tt.config, 0o600)
			}
			r := (&cli{t: t, config: path}).run("kms", "list-keys")
			if r.code != 1 || !strings.Contains(r.stderr, tt.want) {
				t.Fatalf("code %d stderr %q, want 1 and %q", r.code, r.stderr, tt.want)
			}
		})
	}
}

func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeEndToEnd serves the embedded KMS on a unix socket and loopback
// TCP and uses it through the huaweicloud provider from other
// configurations, as this host and a second host would; each access key
// reaches only its own keys.
func TestServeEndToEnd(t *testing.T) {
	server := localCLI(t)
	id := strings.TrimSpace(server.run("kms", "create-key", "--alias", "shared").stdout)
	other := strings.TrimSpace(server.run("kms", "create-key", "--alias", "host2").stdout)
	dir := t.TempDir()
	sk := writeFile(t, filepath.Join(dir, "sk"), "c2VjcmV0LWtleS1mb3ItdGVzdHM\n", 0o600)
	sk2 := writeFile(t, filepath.Join(dir, "sk2"), "b3RoZXItc2VjcmV0LWtleS1mb3ItdGVzdHM\n", 0o600)
	addr := freePort(t)
	sock := filepath.Join(dir, "run", "kms.sock")

	base, err := os.ReadFile(server.config)
	if err != nil {
		t.Fatal(err)
	}
	withClients := &cli{t: t, config: writeFile(t, filepath.Join(dir, "serve.toml"), string(base)+fmt.Sprintf(`
[[kms.serve.client]]
access_key = "AK1"
secret_key_file = %q
keys = ["shared"]

[[kms.serve.client]]
access_key = "AK2"
secret_key_file = %q
keys = [%q]
`, sk, sk2, other), 0o600)}
	openSK := &cli{t: t, config: writeFile(t, filepath.Join(dir, "open.toml"), string(base)+fmt.Sprintf(`
[[kms.serve.client]]
access_key = "AK1"
secret_key_file = %q
keys = ["*"]
`, writeFile(t, filepath.Join(dir, "open"), "x", 0o644)), 0o600)}

	refusals := []struct {
		c    *cli
		args []string
		code int
		want string
	}{
		{server, []string{"kms", "serve", "--socket", ""}, 2, "nothing to listen on"},
		{server, []string{"kms", "serve", "--socket", "", "--listen", addr}, 1, "[[kms.serve.client]]"},
		{withClients, []string{"kms", "serve", "--socket", "", "--listen", "0.0.0.0:0"}, 1, "tls_cert"},
		{withClients, []string{"kms", "serve", "--socket", "", "--listen", addr, "--tls-cert", "c.pem"}, 2, "go together"},
		{withClients, []string{"kms", "serve", "--socket", "", "--listen", addr, "--client-ca", "ca.pem"}, 2, "--client-ca needs"},
		{withClients, []string{"kms", "serve", "--socket", "", "--listen", addr, "--socket-group", "no-such-group-kmsagent"}, 1, "socket_group"},
		{withClients, []string{"kms", "serve", "--socket", "", "--listen", addr, "--socket-group", "root"}, 1, "group 0"},
		{openSK, []string{"kms", "serve", "--socket", "", "--listen", addr}, 1, "chmod 600"},
	}
	for _, r := range refusals {
		if res := r.c.run(r.args...); res.code != r.code || !strings.Contains(res.stderr, r.want) {
			t.Fatalf("%v: code %d stderr %q, want %d and %q", r.args, res.code, res.stderr, r.code, r.want)
		}
	}

	ready := tstest.NotifySocket(t) // kms serve sends READY=1 once it listens
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		done <- withClients.runCtx(ctx, "kms", "serve", "--socket", sock, "--listen", addr, "--project-id", "proj")
	}()
	defer func() {
		cancel()
		select {
		case r := <-done:
			if r.code != 0 {
				t.Errorf("serve exited %d: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, "op=describe-key") || !strings.Contains(r.stderr, "client=AK1") {
				t.Errorf("no request log: %s", r.stderr)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop")
		}
	}()
	ready.Wait(t, 10*time.Second, "READY=1")
	for _, check := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Dir(sock), os.ModeDir | 0o750}, {sock, os.ModeSocket | 0o600}} {
		if fi, err := os.Stat(check.path); err != nil || fi.Mode() != check.mode {
			t.Fatalf("%s: %v, want mode %v", check.path, err, check.mode)
		}
	}
	client := func(endpoint, ak, secretFile, project string) *cli {
		cfg := fmt.Sprintf("[kms]\nprovider = \"huaweicloud\"\ntimeout = \"5s\"\n[kms.huaweicloud]\nendpoint = %q\nproject_id = %q\naccess_key = %q\nsecret_key_file = %q\n", endpoint, project, ak, secretFile)
		return &cli{t: t, config: writeFile(t, filepath.Join(dir, fmt.Sprintf("client-%d.toml", time.Now().UnixNano())), cfg, 0o600)}
	}
	tcp, unix := "http://"+addr, "unix://"+sock
	for _, tc := range []struct {
		name              string
		endpoint, ak, sk  string
		project, key      string
		code              int
		stdout, stderrSub string
	}{
		{"own key over TCP", tcp, "AK1", sk, "proj", id, 0, "shared", ""},
		{"own key over the socket", unix, "AK1", sk, "proj", id, 0, "shared", ""},
		{"own key by id", tcp, "AK2", sk2, "proj", other, 0, "host2", ""},
		{"another host's key", tcp, "AK1", sk, "proj", other, exitKey, "", "access denied"},
		{"another host's key, reverse", unix, "AK2", sk2, "proj", id, exitKey, "", "access denied"},
		// Huawei Cloud KMS takes key ids only, and so does serve: an
		// alias is refused before any request, as in production.
		{"alias", tcp, "AK1", sk, "proj", "shared", exitFailure, "", "not aliases"},
		{"unknown access key", tcp, "AK3", sk, "proj", id, exitKey, "", "access denied"},
		{"wrong secret", tcp, "AK1", sk2, "proj", id, exitKey, "", "access denied"},
		{"wrong project", tcp, "AK1", sk, "other", id, exitKey, "", "access denied"},
	} {
		r := client(tc.endpoint, tc.ak, tc.sk, tc.project).run("kms", "describe-key", tc.key)
		if r.code != tc.code || !strings.Contains(r.stdout, tc.stdout) || !strings.Contains(r.stderr, tc.stderrSub) {
			t.Errorf("%s: %d %q %q", tc.name, r.code, r.stdout, r.stderr)
		}
	}
}

// TestServeSocketGroup: with a socket group, the socket is 0660 and it and
// its new directory (0750) belong to the group, so its members reach it
// and nobody else does.
func TestServeSocketGroup(t *testing.T) {
	tstest.NeedRoot(t, "to chown the socket")
	server := localCLI(t)
	sock := filepath.Join(t.TempDir(), "run", "kms.sock")
	ready := tstest.NotifySocket(t) // kms serve sends READY=1 once it listens
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() { done <- server.runCtx(ctx, "kms", "serve", "--socket", sock, "--socket-group", "4242") }()
	defer func() {
		cancel()
		if r := <-done; r.code != 0 {
			t.Errorf("serve exited %d: %s", r.code, r.stderr)
		}
		if _, err := os.Lstat(sock); err == nil {
			t.Error("the socket outlived the server")
		}
	}()
	ready.Wait(t, 10*time.Second, "READY=1")
	for _, want := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Dir(sock), os.ModeDir | 0o750}, {sock, os.ModeSocket | 0o660}} {
		fi, err := os.Stat(want.path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode() != want.mode || st.Uid != 0 || st.Gid != 4242 {
			t.Errorf("%s: mode %v owner %d:%d, want %v 0:4242", want.path, fi.Mode(), st.Uid, st.Gid, want.mode)
		}
	}
}
