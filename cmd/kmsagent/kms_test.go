package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
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
	var out, errb lockedBuffer
	env := &cliEnv{stdout: &out, stderr: &errb, stdin: strings.NewReader("")}
	if c.config != "" {
		args = append([]string{"--config", c.config}, args...)
	}
	code := run(ctx, env, args)
	return result{code, out.String(), errb.String()}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) string {
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

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeEndToEnd serves the embedded KMS and uses it through the
// huaweicloud provider from a second configuration, as a second host would.
func TestServeEndToEnd(t *testing.T) {
	server := localCLI(t)
	id := strings.TrimSpace(server.run("kms", "create-key", "--alias", "shared").stdout)
	dir := t.TempDir()
	sk := writeFile(t, filepath.Join(dir, "sk"), "c2VjcmV0LWtleS1mb3ItdGVzdHM\n", 0o600)
	addr := freePort(t)

	refusals := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"kms", "serve"}, 2, "--listen"},
		{[]string{"kms", "serve", "--listen", "0.0.0.0:0"}, 1, "without authentication"},
		{[]string{"kms", "serve", "--listen", addr, "--access-key", "AK"}, 2, "go together"},
		{[]string{"kms", "serve", "--listen", addr, "--access-key", "AK", "--secret-key-file", writeFile(t, filepath.Join(dir, "open"), "x", 0o644)}, 1, "chmod 600"},
	}
	for _, r := range refusals {
		if res := server.run(r.args...); res.code != r.code || !strings.Contains(res.stderr, r.want) {
			t.Fatalf("%v: code %d stderr %q", r.args, res.code, res.stderr)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() {
		done <- server.runCtx(ctx, "kms", "serve", "--listen", addr, "--access-key", "AK1", "--secret-key-file", sk, "--project-id", "proj")
	}()
	defer func() {
		cancel()
		select {
		case r := <-done:
			if r.code != 0 {
				t.Errorf("serve exited %d: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, "op=describe-key") {
				t.Errorf("no request log: %s", r.stderr)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop")
		}
	}()
	for i := 0; ; i++ {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			break
		}
		if i > 100 {
			t.Fatal("serve did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	client := func(ak, project string) *cli {
		cfg := fmt.Sprintf("[kms]\nprovider = \"huaweicloud\"\ntimeout = \"5s\"\n[kms.huaweicloud]\nendpoint = \"http://%s\"\nproject_id = %q\naccess_key = %q\nsecret_key_file = %q\n", addr, project, ak, sk)
		return &cli{t: t, config: writeFile(t, filepath.Join(dir, ak+project+".toml"), cfg, 0o600)}
	}
	if r := client("AK1", "proj").run("kms", "describe-key", id); r.code != 0 || !strings.Contains(r.stdout, "huaweicloud") || !strings.Contains(r.stdout, "shared") {
		t.Fatalf("describe-key through serve: %d %q %q", r.code, r.stdout, r.stderr)
	}
	// Huawei Cloud KMS takes key ids only, and so does serve: an alias
	// that the local provider resolves is refused here, before any
	// request, as it would be in production.
	if r := client("AK1", "proj").run("kms", "describe-key", "shared"); r.code != 1 || !strings.Contains(r.stderr, "not aliases") {
		t.Fatalf("alias through serve: %d %q", r.code, r.stderr)
	}
	if r := client("AK2", "proj").run("kms", "describe-key", id); r.code != exitKey || !strings.Contains(r.stderr, "access denied") {
		t.Fatalf("wrong access key: %d %q", r.code, r.stderr)
	}
	if r := client("AK1", "other").run("kms", "describe-key", id); r.code != exitKey {
		t.Fatalf("wrong project: %d %q", r.code, r.stderr)
	}
}
