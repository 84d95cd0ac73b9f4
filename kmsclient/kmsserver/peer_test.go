package kmsserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"kmsagent/agent/tstest"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
	"kmsagent/kmsclient/kmsserver"
)

// creds are the credentials a test connection is made with.
type creds struct {
	uid, gid int
	groups   []int
}

// dialAs connects to the unix socket addr with c as the credentials of
// the connecting thread only (raw syscalls, unlike syscall.Setuid, change
// one thread), so the kernel records them for SO_PEERCRED and
// SO_PEERGROUPS. The thread is locked and never unlocked: it ends with
// the goroutine instead of running other code with those credentials.
func dialAs(t *testing.T, addr string, c *creds) (net.Conn, error) {
	t.Helper()
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if c != nil {
			groups := make([]uint32, len(c.groups)+1)
			for i, g := range c.groups {
				groups[i] = uint32(g)
			}
			if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, uintptr(len(c.groups)), uintptr(unsafe.Pointer(&groups[0])), 0); e != 0 {
				ch <- result{err: fmt.Errorf("setgroups: %w", e)}
				return
			}
			if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, uintptr(c.gid), uintptr(c.gid), uintptr(c.gid)); e != 0 {
				ch <- result{err: fmt.Errorf("setresgid: %w", e)}
				return
			}
			if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(c.uid), uintptr(c.uid), uintptr(c.uid)); e != 0 {
				ch <- result{err: fmt.Errorf("setresuid: %w", e)}
				return
			}
		}
		conn, err := net.Dial("unix", addr)
		ch <- result{conn, err}
	}()
	r := <-ch
	return r.conn, r.err
}

// roundTrip sends one describe-key request over conn, signed when sk is
// set, and returns the status and error code.
func roundTrip(t *testing.T, conn net.Conn, keyID, sk string) (int, string) {
	t.Helper()
	body := []byte(`{"key_id":"` + keyID + `"}`)
	req, err := http.NewRequest(http.MethodPost, "http://localhost"+wire.Path(testProject, wire.OpDescribeKey), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", wire.ContentType)
	if sk != "" {
		// As the huaweicloud client does, so the same request signs
		// differently within one second.
		req.Header.Set("X-Sdk-Nonce", rand.Text())
		if err := signer.Sign(req, body, signer.Credentials{AccessKey: testAK, SecretKey: []byte(sk)}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var eb wire.ErrorBody
	json.Unmarshal(raw, &eb)
	return resp.StatusCode, eb.Error.Code
}

// TestPeerCredentials connects to the unix socket as root, as uid 65534,
// and as uid 65534 in the socket group (primary, and supplementary only).
// The socket is abstract, so no file mode stands in the way: SO_PEERCRED
// alone decides.
func TestPeerCredentials(t *testing.T) {
	tstest.NeedRoot(t, "to connect with other credentials")
	const group = 4242
	addr := fmt.Sprintf("@kmsserver-test-%d-%d", time.Now().UnixNano(), syscall.Getpid())
	ln, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	opts := authOpts()
	opts.SocketGroup = group
	s := serveOn(t, ln, opts, kmsserver.Limits{}, nil)
	info, err := s.store.CreateKey(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	nobody := &creds{uid: 65534, gid: 65534}
	tests := []struct {
		name   string
		creds  *creds
		sk     string
		status int
		code   string
	}{
		{"root unsigned", nil, "", 200, ""},
		{"root signed", nil, testSK, 200, ""},
		{"root, bad signature", nil, "wrong", 401, wire.CodeGatewayAuth},
		{"nobody unsigned", nobody, "", 403, wire.CodeNoAPIPermission},
		{"nobody signed", nobody, testSK, 403, wire.CodeNoAPIPermission},
		{"nobody with supplementary groups", &creds{uid: 65534, gid: 65534, groups: []int{100, 65534}}, testSK, 403, wire.CodeNoAPIPermission},
		{"nobody with the group as primary", &creds{uid: 65534, gid: group}, testSK, 200, ""},
		{"nobody with the group as supplementary", &creds{uid: 65534, gid: 65534, groups: []int{100, group}}, testSK, 200, ""},
		{"group member unsigned", &creds{uid: 65534, gid: group}, "", 401, wire.CodeGatewayAuth},
		{"group member, bad signature", &creds{uid: 65534, gid: group}, "wrong", 401, wire.CodeGatewayAuth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := dialAs(t, addr, tc.creds)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			status, code := roundTrip(t, conn, info.ID, tc.sk)
			if status != tc.status || code != tc.code {
				t.Fatalf("got %d %s, want %d %s", status, code, tc.status, tc.code)
			}
		})
	}

	// Root only: the group is nobody's.
	ln2, err := net.Listen("unix", addr+"-rootonly")
	if err != nil {
		t.Fatal(err)
	}
	opts.SocketGroup = kmsserver.NoGroup
	serveOn(t, ln2, opts, kmsserver.Limits{}, nil)
	conn, err := dialAs(t, addr+"-rootonly", &creds{uid: 65534, gid: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if status, code := roundTrip(t, conn, info.ID, testSK); status != 403 || code != wire.CodeNoAPIPermission {
		t.Fatalf("nobody with gid 0 on a root-only socket: %d %s", status, code)
	}
}
