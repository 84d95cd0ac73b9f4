package kmsserver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
	"kmsagent/kmsclient/kmsserver"
)

const (
	host1AK, host1SK = "HOST1AK", "host-one-secret-key-for-the-tests-0001"
	host2AK, host2SK = "HOST2AK", "host-two-secret-key-for-the-tests-0002"
)

func clientFor(t testing.TB, url, ak, sk string) *huaweicloud.Client {
	t.Helper()
	c, err := huaweicloud.New(context.Background(), huaweicloud.Config{
		Endpoint: url, ProjectID: testProject, AccessKey: ak, SecretKeyFile: skFile(t, sk),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKeyPolicy: each access key uses only the CMKs it lists (the list
// may name a key by id or by alias; requests name keys by id); one host's credential does not unwrap another host's keys, and
// a key it may not use is refused the same whether it exists or not.
func TestKeyPolicy(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, kmsserver.Options{ProjectID: testProject})
	k1, _ := f.store.CreateKey(ctx, "host1-disks", "")
	k2, _ := f.store.CreateKey(ctx, "host2-disks", "")
	// The key lists name keys that exist only now.
	f.srv.Config.Handler = kmsserver.New(f.store, optsWithLog(kmsserver.Options{
		ProjectID: testProject,
		Clients: []kmsserver.Client{
			{AccessKey: host1AK, SecretKey: []byte(host1SK), Keys: []string{"host1-disks"}},
			{AccessKey: host2AK, SecretKey: []byte(host2SK), Keys: []string{k2.ID}},
		},
	}, f))
	c1 := clientFor(t, f.srv.URL, host1AK, host1SK)
	c2 := clientFor(t, f.srv.URL, host2AK, host2SK)

	for _, k := range []struct {
		c   *huaweicloud.Client
		key string
	}{{c1, k1.ID}, {c2, k2.ID}} {
		dk, err := k.c.GenerateDataKey(ctx, k.key, 32, "vol")
		if err != nil {
			t.Fatalf("own key %s: %v", k.key, err)
		}
		dk.Wipe()
	}
	dk2, err := c2.GenerateDataKey(ctx, k2.ID, 32, "host2-vol")
	if err != nil {
		t.Fatal(err)
	}
	defer dk2.Wipe()

	denied := func(name string, err error) {
		t.Helper()
		var ke *kmsclient.Error
		if !errors.Is(err, kmsclient.ErrAccessDenied) || !errors.As(err, &ke) || ke.Status != http.StatusForbidden || ke.Code != wire.CodeNoKeyPermission {
			t.Errorf("%s: got %v, want 403 %s", name, err, wire.CodeNoKeyPermission)
		}
	}
	_, err = c1.Decrypt(ctx, k2.ID, dk2.Wrapped, "host2-vol")
	denied("host1 unwraps host2's key", err)
	_, err = c1.GenerateDataKey(ctx, k2.ID, 32, "x")
	denied("host1 generates with host2's key", err)
	_, err = c1.Encrypt(ctx, k2.ID, dk2.Plaintext, "x")
	denied("host1 wraps with host2's key", err)
	_, err = c1.DescribeKey(ctx, k2.ID)
	denied("host1 describes host2's key", err)
	_, err = c1.DescribeKey(ctx, "3f1b6c9e-0000-4000-8000-000000000000")
	denied("host1 probes a missing key", err)
	_, err = c2.DescribeKey(ctx, k1.ID)
	denied("host2 describes host1's key", err)
	if got, err := c2.Decrypt(ctx, k2.ID, dk2.Wrapped, "host2-vol"); err != nil {
		t.Fatalf("host2 unwraps its own key: %v", err)
	} else {
		got.Wipe()
	}
}

// optsWithLog logs to f's buffer, as newFixture does.
func optsWithLog(opts kmsserver.Options, f *fixture) kmsserver.Options {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(f.log, nil))
	}
	return opts
}

// clock is a settable time for the server.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// signedRequest is one request, signed once, that can be sent again.
type signedRequest struct {
	path   string
	body   []byte
	header http.Header
}

func sign(t *testing.T, url, path string, body []byte, date time.Time) *signedRequest {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", wire.ContentType)
	req.Header.Set("X-Sdk-Nonce", rand.Text())
	if err := signer.Sign(req, body, signer.Credentials{AccessKey: testAK, SecretKey: []byte(testSK)}, date); err != nil {
		t.Fatal(err)
	}
	return &signedRequest{path: path, body: body, header: req.Header}
}

func (r *signedRequest) send(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+r.path, bytes.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = r.header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var eb struct {
		Error wire.ErrorDetail `json:"error"`
	}
	json.Unmarshal(raw, &eb)
	return resp.StatusCode, eb.Error.Code, resp.Header
}

// TestReplay: a signed request is served once; sent again within the
// window it is a bad signature, and after the window a stale one.
func TestReplay(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Now()}
	opts := authOpts()
	opts.Now = clk.now
	f := newFixture(t, opts)
	info, _ := f.store.CreateKey(ctx, "", "")
	dk, err := f.store.GenerateDataKey(ctx, info.ID, 32, "vol")
	if err != nil {
		t.Fatal(err)
	}
	dk.Plaintext.Wipe()
	body := []byte(`{"key_id":"` + info.ID + `","cipher_text":"` + hex.EncodeToString(dk.Wrapped) + `","datakey_cipher_length":"32","additional_authenticated_data":"vol"}`)
	r := sign(t, f.srv.URL, wire.Path(testProject, wire.OpDecryptDataKey), body, clk.now())
	if status, code, _ := r.send(t, f.srv.URL); status != 200 {
		t.Fatalf("first: %d %s", status, code)
	}
	for _, step := range []struct {
		advance time.Duration
		code    string
	}{
		{0, wire.CodeGatewayAuth},
		{time.Minute, wire.CodeGatewayAuth},
		{14 * time.Minute, wire.CodeGatewayAuth}, // 15 minutes: the edge of the window
		{time.Minute, wire.CodeGatewayAuth},      // stale now
	} {
		clk.add(step.advance)
		if status, code, _ := r.send(t, f.srv.URL); status != 401 || code != step.code {
			t.Fatalf("replay after %v more: %d %s, want 401 %s", step.advance, status, code, step.code)
		}
	}
	if logs := f.log.String(); !bytes.Contains([]byte(logs), []byte("signature already used")) {
		t.Errorf("the log does not say why the replay was refused:\n%s", logs)
	}
}

// failingBackend fails every unwrap as a broken disk would.
type failingBackend struct{ kmsserver.Backend }

func (failingBackend) Decrypt(context.Context, string, []byte, string) (*secret.Key, error) {
	return nil, errors.New("read error")
}

// TestReplayAfterServerError: a request that failed on the server had no
// effect, so the client's retry of it is not a replay.
func TestReplayAfterServerError(t *testing.T) {
	f := newFixture(t, authOpts())
	f.srv.Config.Handler = kmsserver.New(failingBackend{f.store}, optsWithLog(authOpts(), f))
	body := []byte(`{"key_id":"3f1b6c9e-0000-4000-8000-000000000000","cipher_text":"00","datakey_cipher_length":"32"}`)
	r := sign(t, f.srv.URL, wire.Path(testProject, wire.OpDecryptDataKey), body, time.Now())
	for i := range 2 {
		if status, code, _ := r.send(t, f.srv.URL); status != 500 || code != wire.CodeInternal {
			t.Fatalf("attempt %d: %d %s, want 500 %s", i, status, code, wire.CodeInternal)
		}
	}
}

// TestRateLimit: a client beyond its rate gets 429 APIGW.0308, which the
// huaweicloud client reports as throttling (and retries); the refused
// request is not spent, so the same signed request passes later; other
// clients are not affected.
func TestRateLimit(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Now()}
	opts := authOpts()
	opts.Clients = append(opts.Clients, kmsserver.Client{AccessKey: host1AK, SecretKey: []byte(host1SK), Keys: []string{kmsserver.AllKeys}})
	opts.Now, opts.RequestsPerSecond, opts.Burst = clk.now, 1, 3
	f := newFixture(t, opts)
	info, _ := f.store.CreateKey(ctx, "", "")
	c := f.client(t, "")
	for i := range 3 {
		if _, err := c.DescribeKey(ctx, info.ID); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	_, err := c.DescribeKey(ctx, info.ID)
	var ke *kmsclient.Error
	if !errors.Is(err, kmsclient.ErrThrottled) || !errors.As(err, &ke) || ke.Code != wire.CodeGatewayThrottled || ke.Status != http.StatusTooManyRequests {
		t.Fatalf("beyond the burst: %v", err)
	}
	if _, err := clientFor(t, f.srv.URL, host1AK, host1SK).DescribeKey(ctx, info.ID); err != nil {
		t.Fatalf("another client: %v", err)
	}
	r := sign(t, f.srv.URL, wire.Path(testProject, wire.OpDescribeKey), []byte(`{"key_id":"`+info.ID+`"}`), clk.now())
	if status, code, h := r.send(t, f.srv.URL); status != 429 || code != wire.CodeGatewayThrottled || h.Get("Retry-After") == "" {
		t.Fatalf("throttled: %d %s %v", status, code, h)
	}
	clk.add(time.Second)
	if status, code, _ := r.send(t, f.srv.URL); status != 200 {
		t.Fatalf("the same request a second later: %d %s", status, code)
	}
}
