package huaweicloud

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"kmsagent/kmsclient"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
)

const expiresLayout = "2006-01-02T15:04:05.000000Z" // as IAM writes expires_at

// fakeMetadata is the ECS metadata service: PUT /meta-data/latest/api/token
// and GET /openstack/latest/securitykey. Every successful securitykey
// answer is a new temporary credential, registered with the fake KMS.
type fakeMetadata struct {
	srv *httptest.Server
	kms *fakeKMS
	now func() time.Time

	mu          sync.Mutex
	life        time.Duration
	tokenStatus int             // answer to PUT token; 0 serves a token
	tokenSeq    []int           // answers to the next PUT token requests, before tokenStatus applies
	needToken   bool            // securitykey answers 401 without the latest token
	keyStatus   int             // answer to GET securitykey; 0 serves a credential
	keyBody     string          // body of a securitykey answer instead of a credential, or of its failure
	gate        chan struct{}   // when set, securitykey waits for it to close
	arrived     chan struct{}   // when set, securitykey sends on it before waiting for gate
	fetches     int             // securitykey requests
	tokens      []string        // tokens handed out
	seenTokens  []string        // X-Metadata-Token of each securitykey request
	ttl         []string        // X-Metadata-Token-Ttl-Seconds of each token request
	issued      []tempIssued    // credentials handed out
	sks         map[string]bool // SKs handed out, to look for in errors
}

type tempIssued struct {
	ak, token string
	expires   time.Time
}

func newFakeMetadata(t *testing.T, kms *fakeKMS, now func() time.Time) *fakeMetadata {
	m := &fakeMetadata{kms: kms, now: now, life: time.Hour, sks: map[string]bool{}}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.srv.Close)
	return m
}

func (m *fakeMetadata) set(fn func(m *fakeMetadata)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fn(m)
}

func (m *fakeMetadata) fetchCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fetches
}

func (m *fakeMetadata) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/meta-data/latest/api/token":
		m.mu.Lock()
		defer m.mu.Unlock()
		m.ttl = append(m.ttl, r.Header.Get("X-Metadata-Token-Ttl-Seconds"))
		status := m.tokenStatus
		if len(m.tokenSeq) > 0 {
			status, m.tokenSeq = m.tokenSeq[0], m.tokenSeq[1:]
		}
		if status != 0 {
			http.Error(w, http.StatusText(status), status)
			return
		}
		tok := fmt.Sprintf("mdtoken-%d", len(m.tokens)+1)
		m.tokens = append(m.tokens, tok)
		fmt.Fprint(w, tok)
	case r.Method == http.MethodGet && r.URL.Path == "/openstack/latest/securitykey":
		m.mu.Lock()
		gate, arrived := m.gate, m.arrived
		m.fetches++
		m.seenTokens = append(m.seenTokens, r.Header.Get("X-Metadata-Token"))
		m.mu.Unlock()
		if arrived != nil {
			select { // a fetch too many must fail the test, not hang it
			case arrived <- struct{}{}:
			default:
			}
		}
		if gate != nil {
			<-gate
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if (len(m.tokens) > 0 && m.tokenStatus == 0 || m.needToken) && (len(m.tokens) == 0 || r.Header.Get("X-Metadata-Token") != m.tokens[len(m.tokens)-1]) {
			http.Error(w, "missing or stale metadata token", http.StatusUnauthorized)
			return
		}
		if m.keyStatus != 0 {
			body := `{"message":"no agency"}`
			if m.keyBody != "" {
				body = m.keyBody
			}
			http.Error(w, body, m.keyStatus)
			return
		}
		if m.keyBody != "" {
			fmt.Fprint(w, m.keyBody)
			return
		}
		n := len(m.issued) + 1
		sk := make([]byte, 20)
		rand.Read(sk)
		c := tempIssued{
			ak:      fmt.Sprintf("TMPAK%03d", n),
			token:   fmt.Sprintf("gQpjbi1ub3J0aC00%d%s", n, strings.Repeat("x", 200)),
			expires: m.now().Add(m.life),
		}
		m.issued = append(m.issued, c)
		m.sks[hex.EncodeToString(sk)] = true
		m.kms.addTemp(c.ak, hex.EncodeToString(sk), c.token)
		json.NewEncoder(w).Encode(map[string]any{"credential": map[string]string{
			"access":        c.ak,
			"secret":        hex.EncodeToString(sk),
			"securitytoken": c.token,
			"expires_at":    c.expires.UTC().Format(expiresLayout),
		}})
	default:
		http.NotFound(w, r)
	}
}

// metadataClient is a client with metadata credentials on clk, the fakes
// sharing that clock.
func metadataClient(t *testing.T) (*Client, *fakeKMS, *fakeMetadata, *clock) {
	t.Helper()
	clk := newClock()
	f := newFakeKMS(t)
	f.now = clk.Now
	f.addKey(keyA)
	md := newFakeMetadata(t, f, clk.Now)
	c := newTestClient(t, Config{
		Endpoint:         f.srv.URL,
		ProjectID:        testProject,
		Region:           testRegion,
		Credentials:      CredentialsMetadata,
		MetadataEndpoint: md.srv.URL + "/",
		Timeout:          5 * time.Second,
	})
	c.now = clk.Now
	return c, f, md, clk
}

// waitRefresh waits for the background refresh in progress, if any.
func waitRefresh(c *Client) {
	m := c.creds.(*metadataCredentials)
	m.mu.Lock()
	running := m.running
	m.mu.Unlock()
	if running != nil {
		<-running
	}
}

func TestMetadataCredentialsRefresh(t *testing.T) {
	c, f, md, clk := metadataClient(t)
	t0 := clk.Now()
	ctx := t.Context()
	// describe signs with the current credential and reports which one
	// the KMS saw.
	describe := func(t *testing.T, at time.Duration) received {
		t.Helper()
		clk.Set(t0.Add(at))
		if _, err := c.DescribeKey(ctx, keyA); err != nil {
			t.Fatalf("at %v: %v", at, err)
		}
		return f.last(t)
	}
	steps := []struct {
		at          time.Duration
		wantAK      string
		wantFetches int // after the call and any refresh it started
	}{
		{0, "TMPAK001", 1},                // first use fetches
		{time.Minute, "TMPAK001", 1},      // reused
		{39 * time.Minute, "TMPAK001", 1}, // a third of the hour left is the lead
		{41 * time.Minute, "TMPAK001", 2}, // refresh due: served with the old, refreshed in the background
		{41*time.Minute + time.Second, "TMPAK002", 2},
		{80 * time.Minute, "TMPAK002", 2},
		{82 * time.Minute, "TMPAK002", 3}, // fetched at 41m for an hour: due at 81m
		{83 * time.Minute, "TMPAK003", 3},
	}
	for _, s := range steps {
		r := describe(t, s.at)
		waitRefresh(c)
		if r.accessKey != s.wantAK || md.fetchCount() != s.wantFetches {
			t.Fatalf("at %v: signed by %s after %d fetches, want %s after %d", s.at, r.accessKey, md.fetchCount(), s.wantAK, s.wantFetches)
		}
		md.mu.Lock()
		want := md.issued[len(md.issued)-1]
		if s.wantAK != want.ak {
			want = md.issued[len(md.issued)-2]
		}
		md.mu.Unlock()
		if r.token != want.token {
			t.Fatalf("at %v: X-Security-Token %q, want %q", s.at, r.token, want.token)
		}
		if auth := r.header.Get("Authorization"); !strings.Contains(auth, "Access="+s.wantAK+",") || !strings.Contains(auth, "x-security-token") {
			t.Fatalf("at %v: Authorization %q does not sign the token with %s", s.at, auth, s.wantAK)
		}
		if got := r.header.Get(signer.HeaderDate); got != clk.Now().UTC().Format(signer.DateFormat) {
			t.Fatalf("at %v: X-Sdk-Date %s, want the client clock", s.at, got)
		}
	}
	// Each fetch asked for a session token first and used it.
	md.mu.Lock()
	defer md.mu.Unlock()
	if len(md.tokens) != 3 || strings.Join(md.seenTokens, ",") != "mdtoken-1,mdtoken-2,mdtoken-3" || md.ttl[0] != "300" {
		t.Fatalf("tokens %q, used %q, ttl %q", md.tokens, md.seenTokens, md.ttl)
	}
}

// TestMetadataFailedRefresh: a refresh that fails keeps the credential in
// hand while it is usable, retries after refreshRetry, and never signs
// with it once it is within expiryMargin of expiry.
func TestMetadataFailedRefresh(t *testing.T) {
	c, f, md, clk := metadataClient(t)
	t0 := clk.Now()
	ctx := t.Context()
	call := func(at time.Duration) error {
		clk.Set(t0.Add(at))
		_, err := c.DescribeKey(ctx, keyA)
		waitRefresh(c)
		return err
	}
	if err := call(0); err != nil {
		t.Fatal(err)
	}
	md.set(func(m *fakeMetadata) { m.keyStatus = http.StatusInternalServerError })
	for _, s := range []struct {
		at      time.Duration
		fetches int
	}{
		{41 * time.Minute, 2},                // refresh fails
		{41*time.Minute + 5*time.Second, 2},  // not again so soon
		{41*time.Minute + 16*time.Second, 3}, // after refreshRetry
		{50 * time.Minute, 4},                // and so on
		{59*time.Minute - time.Second, 5},    // the last second it is used
	} {
		if err := call(s.at); err != nil {
			t.Fatalf("at %v: %v", s.at, err)
		}
		if r := f.last(t); r.accessKey != "TMPAK001" || md.fetchCount() != s.fetches {
			t.Fatalf("at %v: signed by %s after %d fetches, want TMPAK001 after %d", s.at, r.accessKey, md.fetchCount(), s.fetches)
		}
	}
	before := f.count()
	for _, at := range []time.Duration{59 * time.Minute, 59*time.Minute + 30*time.Second, 61 * time.Minute} {
		err := call(at)
		if !errors.Is(err, kmsclient.ErrUnavailable) || !strings.Contains(err.Error(), "ECS metadata securitykey: HTTP 500") {
			t.Fatalf("at %v: got %v, want the metadata failure", at, err)
		}
	}
	if n := f.count(); n != before {
		t.Fatalf("%d requests reached the KMS with an expiring credential", n-before)
	}
	for _, r := range f.received() {
		at, _ := time.Parse(signer.DateFormat, r.header.Get(signer.HeaderDate))
		if r.accessKey == "TMPAK001" && !at.Before(t0.Add(59*time.Minute)) {
			t.Fatalf("TMPAK001 signed at %v, after expiry minus the margin", at)
		}
	}
	// The service recovers: the next call fetches and succeeds.
	md.set(func(m *fakeMetadata) { m.keyStatus = 0 })
	if err := call(62 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if r := f.last(t); r.accessKey != "TMPAK002" {
		t.Fatalf("signed by %s after recovery", r.accessKey)
	}
}

// TestMetadataSingleFetch: concurrent callers with no credential share one
// fetch.
func TestMetadataSingleFetch(t *testing.T) {
	c, f, md, _ := metadataClient(t)
	gate, arrived := make(chan struct{}), make(chan struct{}, 1)
	md.set(func(m *fakeMetadata) { m.gate, m.arrived = gate, arrived })
	const callers = 16
	errs := make(chan error, callers)
	for range callers {
		go func() {
			_, err := c.DescribeKey(t.Context(), keyA)
			errs <- err
		}()
	}
	// Once the fetch has arrived, a caller finds the refresh in flight or,
	// after close(gate), its credential: neither may fetch again.
	<-arrived
	close(gate)
	for range callers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := md.fetchCount(); n != 1 {
		t.Fatalf("%d fetches for %d concurrent callers", n, callers)
	}
	for _, r := range f.received() {
		if r.accessKey != "TMPAK001" {
			t.Fatalf("signed by %s", r.accessKey)
		}
	}
}

// TestMetadataCallerGivesUp: the caller that started a refresh giving up
// does not fail the others waiting for it.
func TestMetadataCallerGivesUp(t *testing.T) {
	c, _, md, _ := metadataClient(t)
	gate, arrived := make(chan struct{}), make(chan struct{}, 1)
	md.set(func(m *fakeMetadata) { m.gate, m.arrived = gate, arrived })
	short, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := c.DescribeKey(short, keyA)
		first <- err
	}()
	<-arrived
	second := make(chan error, 1)
	go func() {
		_, err := c.DescribeKey(t.Context(), keyA)
		second <- err
	}()
	err := <-first
	if !errors.Is(err, kmsclient.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for ECS metadata credentials") {
		t.Fatalf("first caller: %v", err)
	}
	close(gate)
	if err := <-second; err != nil {
		t.Fatalf("second caller: %v", err)
	}
	if n := md.fetchCount(); n != 1 {
		t.Fatalf("%d fetches", n)
	}
}

func TestMetadataTokenStep(t *testing.T) {
	for _, status := range []int{0, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusServiceUnavailable} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			c, f, md, _ := metadataClient(t)
			md.set(func(m *fakeMetadata) { m.tokenStatus = status })
			if _, err := c.DescribeKey(t.Context(), keyA); err != nil {
				t.Fatal(err)
			}
			if r := f.last(t); r.accessKey != "TMPAK001" {
				t.Fatalf("signed by %s", r.accessKey)
			}
			md.mu.Lock()
			defer md.mu.Unlock()
			want := "mdtoken-1"
			if status != 0 {
				want = "" // no token step: no token header
			}
			if len(md.seenTokens) != 1 || md.seenTokens[0] != want {
				t.Fatalf("securitykey saw tokens %q, want %q", md.seenTokens, want)
			}
		})
	}
}

// TestMetadataTokenRetry: a securitykey 401 that is not "no agency" gets
// one more try with a fresh token, which is then required; "no agency" is
// final at once.
func TestMetadataTokenRetry(t *testing.T) {
	tests := []struct {
		name       string
		tokenSeq   []int
		keyStatus  int
		keyBody    string
		ok         bool
		msg        string
		seenTokens []string
		tokenAsks  int
	}{
		{"token came back", []int{503, 0}, 0, "", true, "", []string{"", "mdtoken-1"}, 2},
		{"token still unavailable", []int{503, 503}, 0, "", false, "ECS metadata token: HTTP 503", []string{""}, 2},
		{"no token step", []int{404, 404}, 0, "", false, "ECS metadata token: HTTP 404", []string{""}, 2},
		{"still refused", nil, 401, "token expired", false, "securitykey: HTTP 401: token expired", []string{"mdtoken-1", "mdtoken-2"}, 2},
		{"no agency", nil, 401, metadataNoAgency, false, "securitykey: HTTP 401: " + metadataNoAgency, []string{"mdtoken-1"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, f, md, _ := metadataClient(t)
			md.set(func(m *fakeMetadata) {
				m.tokenSeq, m.needToken, m.keyStatus, m.keyBody = tc.tokenSeq, true, tc.keyStatus, tc.keyBody
			})
			_, err := c.DescribeKey(t.Context(), keyA)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if r := f.last(t); r.accessKey != "TMPAK001" {
					t.Fatalf("signed by %s", r.accessKey)
				}
			} else if !errors.Is(err, kmsclient.ErrAccessDenied) && !errors.Is(err, kmsclient.ErrUnavailable) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %q", err, tc.msg)
			}
			md.mu.Lock()
			defer md.mu.Unlock()
			if !slices.Equal(md.seenTokens, tc.seenTokens) || len(md.ttl) != tc.tokenAsks {
				t.Fatalf("securitykey saw tokens %q after %d token requests, want %q after %d", md.seenTokens, len(md.ttl), tc.seenTokens, tc.tokenAsks)
			}
		})
	}
}

func TestMetadataErrors(t *testing.T) {
	valid := func(expires string) string {
		return `{"credential":{"access":"TMPAK","secret":"0123456789abcdef0123456789abcdef01234567","securitytoken":"tok","expires_at":"` + expires + `"}}`
	}
	future := newClock().Now().Add(time.Hour).Format(expiresLayout)
	tests := []struct {
		name        string
		tokenStatus int
		keyStatus   int
		keyBody     string
		kind        error
		msg         []string
	}{
		{"securitykey 404", 0, 404, "", kmsclient.ErrAccessDenied, []string{"ECS metadata securitykey: HTTP 404", "is an agency attached to this ECS?"}},
		{"securitykey 401", 0, 401, "", kmsclient.ErrAccessDenied, []string{"HTTP 401", "agency"}},
		{"securitykey 403", 0, 403, "", kmsclient.ErrAccessDenied, []string{"HTTP 403", "agency"}},
		{"token 403", 403, 0, "", kmsclient.ErrAccessDenied, []string{"ECS metadata token: HTTP 403", "agency"}},
		{"token 500", 500, 0, "", kmsclient.ErrUnavailable, []string{"ECS metadata token: HTTP 500"}},
		{"securitykey 429", 0, 429, "", kmsclient.ErrThrottled, []string{"HTTP 429"}},
		{"reason quoted", 0, 403, "agency op_svc_ecs not authorized", kmsclient.ErrAccessDenied, []string{"HTTP 403: agency op_svc_ecs not authorized", "agency"}},
		{"failure body with credentials", 0, 500, `{"credential":{"Access":"TMPAK","Secret":"0123456789abcdefXYZ"}}`, kmsclient.ErrUnavailable, []string{"securitykey: HTTP 500)"}},
		{"securitykey 503", 0, 503, "", kmsclient.ErrUnavailable, []string{"HTTP 503"}},
		{"not JSON", 0, 0, "<html>", kmsclient.ErrUnavailable, []string{"malformed response"}},
		{"no credential", 0, 0, `{}`, kmsclient.ErrUnavailable, []string{"missing"}},
		{"no token", 0, 0, `{"credential":{"access":"A","secret":"S","expires_at":"` + future + `"}}`, kmsclient.ErrUnavailable, []string{"access, secret or securitytoken missing"}},
		{"escaped secret", 0, 0, `{"credential":{"access":"A","secret":"S\u0041","securitytoken":"t","expires_at":"` + future + `"}}`, kmsclient.ErrUnavailable, []string{"malformed response"}},
		{"bad expiry", 0, 0, valid("tomorrow"), kmsclient.ErrUnavailable, []string{`expires_at "tomorrow" is not a timestamp`}},
		{"expired", 0, 0, valid(newClock().Now().Add(-time.Second).Format(expiresLayout)), kmsclient.ErrUnavailable, []string{"less than 1m0s from now", "host clock"}},
		{"expires within the margin", 0, 0, valid(newClock().Now().Add(30 * time.Second).Format(expiresLayout)), kmsclient.ErrUnavailable, []string{"less than 1m0s from now"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, f, md, _ := metadataClient(t)
			md.set(func(m *fakeMetadata) {
				m.tokenStatus, m.keyStatus, m.keyBody = tc.tokenStatus, tc.keyStatus, tc.keyBody
			})
			_, err := c.DescribeKey(t.Context(), keyA)
			var ke *kmsclient.Error
			if !errors.As(err, &ke) || !errors.Is(err, tc.kind) || ke.Op != "describe-key" {
				t.Fatalf("got %v, want %v", err, tc.kind)
			}
			for _, m := range tc.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not contain %q", err, m)
				}
			}
			if strings.Contains(err.Error(), "0123456789abcdef") || strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("error %q quotes the SK or is not one line", err)
			}
			if f.count() != 0 {
				t.Fatal("the KMS was called without credentials")
			}
		})
	}
}

func TestMetadataUnreachable(t *testing.T) {
	f := newFakeKMS(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c := newTestClient(t, Config{Endpoint: f.srv.URL, ProjectID: testProject, Credentials: CredentialsMetadata, MetadataEndpoint: dead.URL, Timeout: time.Second})
	_, err := c.GenerateDataKey(t.Context(), keyA, 32, testBinding)
	if !errors.Is(err, kmsclient.ErrUnavailable) || !strings.Contains(err.Error(), "ECS metadata service unreachable") {
		t.Fatalf("got %v", err)
	}
}

// TestMetadataCredentialsRejected: a KMS that refuses the temporary
// credential (the agency lacks KMS rights) is access denied, not retried.
func TestMetadataCredentialsRejected(t *testing.T) {
	c, f, _, _ := metadataClient(t)
	f.setFail(func(string, int) (int, string) {
		return http.StatusForbidden, kmsBody(wire.CodeNoAPIPermission, "The agency has no KMS permission.")
	})
	_, err := kmsclient.WithRetry(c, fastRetry).DescribeKey(t.Context(), keyA)
	if !errors.Is(err, kmsclient.ErrAccessDenied) || f.count() != 1 {
		t.Fatalf("got %v after %d requests", err, f.count())
	}
}

func TestNextRefresh(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		life, wantLeft time.Duration // left before expiry at the refresh
	}{
		{time.Hour, 20 * time.Minute},
		{24 * time.Hour, 8 * time.Hour},
		{20 * time.Minute, 20 * time.Minute / 3},
		{12 * time.Minute, 5 * time.Minute},
		{5 * time.Minute, 150 * time.Second},              // the lead is the whole life: halfway
		{3 * time.Minute, 90 * time.Second},               // likewise
		{15 * time.Second, 5 * time.Second},               // at least refreshMinInterval from now
		{-time.Minute, -time.Minute - refreshMinInterval}, // already expired: still not before then
	} {
		got := nextRefresh(now, now.Add(tc.life))
		if left := now.Add(tc.life).Sub(got); left != tc.wantLeft {
			t.Errorf("life %v: refresh %v before expiry, want %v", tc.life, left, tc.wantLeft)
		}
	}
}

func TestParseExpiry(t *testing.T) {
	want := time.Date(2030, 5, 6, 8, 8, 9, 123456000, time.UTC)
	for _, in := range []string{"2030-05-06T08:08:09.123456Z", "2030-05-06T16:08:09.123456+08:00", "2030-05-06T08:08:09.123456"} {
		got, err := parseExpiry(in)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseExpiry(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "1715000000", "2030-05-06"} {
		if _, err := parseExpiry(in); err == nil {
			t.Errorf("parseExpiry(%q) succeeded", in)
		}
	}
}

// TestMetadataConcurrentRefresh signs from several goroutines while the
// clock runs through many credential lifetimes and the collector runs:
// every request is signed by a credential that has not expired, and no
// refresh is lost or doubled.
func TestMetadataConcurrentRefresh(t *testing.T) {
	c, f, md, clk := metadataClient(t)
	md.set(func(m *fakeMetadata) { m.life = 10 * time.Minute })
	t0 := clk.Now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := c.DescribeKey(t.Context(), keyA); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	const steps = 150
	for i := 1; i <= steps; i++ {
		time.Sleep(time.Millisecond)
		clk.Set(t0.Add(time.Duration(i) * 10 * time.Second))
		if i%10 == 0 {
			runtime.GC()
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	md.mu.Lock()
	expires := map[string]time.Time{}
	for _, c := range md.issued {
		expires[c.ak] = c.expires
	}
	md.mu.Unlock()
	// 25 simulated minutes of 10-minute credentials refreshed 5 minutes
	// before expiry: about five fetches, one at a time.
	if n := md.fetchCount(); n < 4 || n > 7 {
		t.Fatalf("%d fetches", n)
	}
	for _, r := range f.received() {
		at, _ := time.Parse(signer.DateFormat, r.header.Get(signer.HeaderDate))
		if exp, ok := expires[r.accessKey]; !ok || !at.Before(exp) {
			t.Fatalf("request signed at %v by %s, which expires at %v", at, r.accessKey, exp)
		}
	}
}
