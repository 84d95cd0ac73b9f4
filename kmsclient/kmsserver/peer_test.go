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
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/tstest"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
	"kmsagent/kmsclient/kmsserver"
)

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
	nobody := &tstest.Creds{UID: 65534, GID: 65534}
	tests := []struct {
		name   string
		creds  *tstest.Creds
		sk     string
		status int
		code   string
	}{
		{"root unsigned", nil, "", 200, ""},
		{"root signed", nil, testSK, 200, ""},
		{"root, bad signature", nil, "wrong", 401, wire.CodeGatewayAuth},
		{"nobody unsigned", nobody, "", 403, wire.CodeNoAPIPermission},
		{"nobody signed", nobody, testSK, 403, wire.CodeNoAPIPermission},
		{"nobody with supplementary groups", &tstest.Creds{UID: 65534, GID: 65534, Groups: []int{100, 65534}}, testSK, 403, wire.CodeNoAPIPermission},
		{"nobody with the group as primary", &tstest.Creds{UID: 65534, GID: group}, testSK, 200, ""},
		{"nobody with the group as supplementary", &tstest.Creds{UID: 65534, GID: 65534, Groups: []int{100, group}}, testSK, 200, ""},
		{"group member unsigned", &tstest.Creds{UID: 65534, GID: group}, "", 401, wire.CodeGatewayAuth},
		{"group member, bad signature", &tstest.Creds{UID: 65534, GID: group}, "wrong", 401, wire.CodeGatewayAuth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := tstest.DialAs(addr, tc.creds)
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
	conn, err := tstest.DialAs(addr+"-rootonly", &tstest.Creds{UID: 65534, GID: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if status, code := roundTrip(t, conn, info.ID, testSK); status != 403 || code != wire.CodeNoAPIPermission {
		t.Fatalf("nobody with gid 0 on a root-only socket: %d %s", status, code)
	}
}
