package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kmsagent/agent/config"
	"kmsagent/agent/daemon"
	"kmsagent/agent/peercred"
	"kmsagent/agent/tstest"
	"kmsagent/kmsclient"
)

// fakeService mounts every volume at once, except those in fail.
type fakeService struct {
	mu      sync.Mutex
	fail    map[string]error
	mounted map[string]daemon.Spec
}

func (f *fakeService) Mount(ctx context.Context, spec daemon.Spec) (daemon.Mounted, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[spec.Name]; err != nil {
		return daemon.Mounted{}, fmt.Errorf("mount %s: %w", spec.Name, err)
	}
	f.mounted[spec.Name] = spec
	return daemon.Mounted{Spec: spec, WorkerPID: 4242, KeyID: "cmk-1", Provider: "local"}, nil
}

func (f *fakeService) Unmount(ctx context.Context, target string, lazy bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for n, s := range f.mounted {
		if s.Target == target {
			delete(f.mounted, n)
			return nil
		}
	}
	return fmt.Errorf("%s is not mounted", target)
}

func (f *fakeService) Status(ctx context.Context) ([]daemon.VolumeStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []daemon.VolumeStatus
	for _, s := range f.mounted {
		out = append(out, daemon.VolumeStatus{Name: s.Name, Kind: s.Kind, Target: s.Target, State: daemon.ServiceMounted})
	}
	return out, nil
}

const adminGID = 4343

const goodConfig = `[[volume]]
name = "a"
type = "fuse"
source = "/cipher/a"
target = "/mnt/a"
auto = true

[[volume]]
name = "throttled"
type = "fuse"
source = "/cipher/t"
target = "/mnt/t"

[[volume]]
name = "disabled"
type = "fuse"
source = "/cipher/d"
target = "/mnt/d"
`

// setup starts a daemon with the fake service and its control API on a
// socket in a temporary directory that anyone may reach, so that the
// peer's credentials alone decide.
func setup(t *testing.T) (sock, cfgPath string, d *daemon.Daemon) {
	t.Helper()
	dir := t.TempDir()
	cfgPath = filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(cfgPath, []byte(goodConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	svc := &fakeService{mounted: map[string]daemon.Spec{}, fail: map[string]error{
		"throttled": &kmsclient.Error{Provider: "local", Op: "decrypt", Kind: kmsclient.ErrThrottled},
		"disabled":  &kmsclient.Error{Provider: "local", Op: "decrypt", Kind: kmsclient.ErrKeyDisabled},
	}}
	d = daemon.New(cfg, daemon.Options{Service: svc, Load: func() (*config.Config, error) { return config.Load(cfgPath, true) },
		Backoff: daemon.Backoff{Base: time.Hour}})
	ctx, cancel := context.WithCancel(context.Background())
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	<-d.Ready(ctx)
	sock = filepath.Join(dir, "run", "agent.sock")
	group := adminGID
	if os.Geteuid() != 0 {
		group = 0 // no chown; the tests needing other credentials need root anyway
	}
	ln, err := peercred.Listen(sock, group)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(dir), dir, filepath.Dir(sock)} {
		os.Chmod(p, 0o755)
	}
	os.Chmod(sock, 0o666)
	srv := NewServer(d, Options{AdminGroup: adminGID, Metrics: d.Metrics().Registry})
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		d.Stop(context.Background())
		cancel()
	})
	return sock, cfgPath, d
}

func TestAPI(t *testing.T) {
	tstest.NeedRoot(t, "to connect with other credentials")
	sock, cfgPath, _ := setup(t)
	ctx := t.Context()
	nobody := clientAs(sock, &tstest.Creds{UID: 65534, GID: 65534})
	admin := clientAs(sock, &tstest.Creds{UID: 65534, GID: 65534, Groups: []int{100, adminGID}})
	root := NewClient(sock)
	defer root.Close()

	// Everyone may read.
	for name, c := range map[string]*Client{"nobody": nobody, "admin": admin, "root": root} {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatalf("%s: status: %v", name, err)
		}
		if st.Status != "1 volume unlocked" || len(st.Volumes) != 3 || st.Volumes[0].Name != "a" || st.Volumes[0].State != daemon.StateMounted || st.Volumes[0].WorkerPID != 4242 {
			t.Errorf("%s: status %+v", name, st)
		}
		if h, err := c.Health(ctx); err != nil || !h.OK {
			t.Errorf("%s: health %+v %v", name, h, err)
		}
		if m, err := c.Metrics(ctx); err != nil || !strings.Contains(m, `kmsagent_volumes{state="mounted"} 1`) || !strings.Contains(m, `kmsagent_unlocks_total{kind="fuse",result="ok"} 1`) {
			t.Errorf("%s: metrics %v:\n%.2000s", name, err, m)
		}
	}

	// Only root and the admin group may change state.
	_, err := nobody.Mount(ctx, "a")
	var ae *Error
	if !errors.Is(err, ErrForbidden) || !errors.As(err, &ae) || ae.Status != 403 || !strings.Contains(err.Error(), "uid 65534 may not") {
		t.Errorf("nobody mount: %v", err)
	}
	if err := nobody.Unmount(ctx, "a", false); !errors.Is(err, ErrForbidden) {
		t.Errorf("nobody unmount: %v", err)
	}
	if _, err := nobody.Reload(ctx); !errors.Is(err, ErrForbidden) {
		t.Errorf("nobody reload: %v", err)
	}
	if err := admin.Unmount(ctx, "/mnt/a", false); err != nil {
		t.Fatalf("admin unmount: %v", err)
	}
	if v, err := root.Mount(ctx, "a"); err != nil || v.State != daemon.StateMounted {
		t.Fatalf("root mount: %+v %v", v, err)
	}

	// Typed errors.
	for _, tc := range []struct {
		name string
		want error
		code int
	}{
		{"throttled", kmsclient.ErrThrottled, 503},
		{"disabled", kmsclient.ErrKeyDisabled, 502},
		{"nope", daemon.ErrNotFound, 404},
	} {
		_, err := admin.Mount(ctx, tc.name)
		if !errors.Is(err, tc.want) || !errors.As(err, &ae) || ae.Status != tc.code || strings.Contains(err.Error(), "\n") {
			t.Errorf("mount %s: %v (%+v), want %v and HTTP %d", tc.name, err, ae, tc.want, tc.code)
		}
	}
	st, _ := root.Status(ctx)
	for _, v := range st.Volumes {
		if v.Name == "throttled" && (v.State != daemon.StateRetrying || v.ErrorKind != "kms_throttled" || v.Retries != 1) {
			t.Errorf("throttled: %+v", v)
		}
	}

	// Reload: a bad file is refused with its line and changes nothing.
	os.WriteFile(cfgPath, []byte(goodConfig+"\n[[volume]]\nname = \"b\"\ntipe = \"fuse\"\n"), 0o644)
	_, err = root.Reload(ctx)
	if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), ":22: unknown key volume.tipe") {
		t.Fatalf("bad reload: %v", err)
	}
	os.WriteFile(cfgPath, []byte(goodConfig+"\n[[volume]]\nname = \"b\"\ntype = \"fuse\"\nsource = \"/cipher/b\"\ntarget = \"/mnt/b\"\nauto = true\n"), 0o644)
	res, err := admin.Reload(ctx)
	if err != nil || len(res.Added) != 1 || res.Added[0] != "b" || len(res.Removed)+len(res.Changed) != 0 {
		t.Fatalf("reload: %+v %v", res, err)
	}
	// The new auto volume mounts in the background; a mount request
	// waits for that attempt.
	if v, err := root.Mount(ctx, "b"); err != nil || v.State != daemon.StateMounted {
		t.Fatalf("mount b: %+v %v", v, err)
	}
	st, _ = root.Status(ctx)
	if len(st.Volumes) != 4 || st.Volumes[1].Name != "b" || st.Volumes[1].State != daemon.StateMounted {
		t.Errorf("after reload: %+v", st.Volumes)
	}
}

func TestBadRequests(t *testing.T) {
	sock, _, _ := setup(t)
	root := NewClient(sock)
	defer root.Close()
	ctx := t.Context()
	for _, tc := range []struct{ path, body, want string }{
		{"/v1/mount", `{"name":"a","x":1}`, "unknown field"},
		{"/v1/mount", `{}`, "name is empty"},
		{"/v1/mount", `{"name":"a"}{}`, "data after"},
		{"/v1/mount", `[`, "request body"},
		{"/v1/unmount", `{"name":"a","target":"/mnt/a"}`, "not both"},
		{"/v1/unmount", `{"target":"mnt"}`, "not an absolute path"},
		{"/v1/nothing", ``, "no such endpoint"},
	} {
		err := rawPost(t, root, tc.path, tc.body)
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %s: %v, want bad request with %q", tc.path, tc.body, err, tc.want)
		}
	}
	if err := root.call(ctx, "GET", "/v1/mount", nil, nil); err == nil {
		t.Error("GET /v1/mount accepted")
	}
	missing := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	if _, err := missing.Status(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no socket: %v", err)
	}
}

// rawPost posts body as it is and decodes the answer as Client.call.
func rawPost(t *testing.T, c *Client, path, body string) error {
	resp, err := c.hc.Post("http://kmsagent"+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb struct {
		Error *Error `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || eb.Error == nil {
		return fmt.Errorf("HTTP %d without an error (%v)", resp.StatusCode, err)
	}
	return eb.Error
}

func TestServeRefusesTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := NewServer(nil, Options{}).Serve(ln); err == nil || !strings.Contains(err.Error(), "only unix sockets") {
		t.Fatalf("Serve on TCP: %v", err)
	}
}

// FuzzDecode: any body gives a request that passes validation or a
// one-line bad request, never a panic.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"name":"a"}`, `{"target":"/mnt/a","lazy":true}`, `{"name":"a","target":"/b"}`, `{"name":"a\u0000"}`, `[1]`, `{"name":1}`, `{"name":"a"} x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var m MountRequest
		if err := decodeBody(body, &m); err == nil {
			if verr := m.validate(); verr == nil && (m.Name == "" || strings.ContainsAny(m.Name, "\x00\n")) {
				t.Fatalf("accepted name %q", m.Name)
			}
		} else if strings.Contains(err.Error(), "\n") || err.Code != "bad_request" {
			t.Fatalf("error %q", err)
		}
		var u UnmountRequest
		if err := decodeBody(body, &u); err == nil {
			if verr := u.validate(); verr == nil {
				if (u.Name == "") == (u.Target == "") || u.Target != "" && !strings.HasPrefix(u.Target, "/") {
					t.Fatalf("accepted %+v", u)
				}
			} else if strings.Contains(verr.Error(), "\n") {
				t.Fatalf("multi-line %q", verr)
			}
		}
	})
}
