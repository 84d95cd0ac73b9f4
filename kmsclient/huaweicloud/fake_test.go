package huaweicloud

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
)

// Test identities. The SK is 40 characters, like a real one.
const (
	testProject = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
	testAK      = "HPUATESTACCESSKEY0001"
	testSK      = "s3cr3tK3yF0rT3st1ngOnlyXXXXXXXXXXXXXXXXX"
	testRegion  = "cn-north-4"
	testBinding = "6b1c1c0e-8a3e-4b8e-9f8c-2c9a6f0d1e01"
)

// clock is a settable clock shared by a client and the fakes.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// fakeKey is a CMK of the fake KMS.
type fakeKey struct {
	state    string // wire.KeyState*
	master   []byte
	created  string
	deletion string
	alias    string
}

// received is one request as the fake KMS saw it, after its checks.
type received struct {
	op        string
	path      string
	accessKey string
	token     string // X-Security-Token
	header    http.Header
	body      map[string]json.RawMessage
}

func (r received) str(name string) string {
	var s string
	if raw, ok := r.body[name]; ok {
		if err := json.Unmarshal(raw, &s); err != nil {
			panic(fmt.Sprintf("member %s is not a string: %s", name, raw))
		}
	}
	return s
}

// fakeKMS follows the Huawei KMS v1.0 wire format as the official SDK's
// models publish it (testdata/README.md of package wire): signed POSTs to
// /v1.0/{project_id}/kms/{op}, request members as in the SDK's request
// bodies and no others, numbers as JSON strings, key ids as lower-case
// UUIDs (KMS.0205 otherwise), key material and cipher_text as upper-case
// hex, an X-Request-Id on every answer, errors as
// {"error":{"error_code","error_msg"}} from KMS and at the top level from
// the API gateway. Data keys are sealed with AES-GCM under the CMK, the
// binding (possibly none) as additional data.
type fakeKMS struct {
	t   *testing.T
	srv *httptest.Server
	now func() time.Time
	// prefix is an endpoint path before /v1.0; set before use.
	prefix string

	mu   sync.Mutex
	keys map[string]*fakeKey
	// temp holds temporary credentials: access key to SK and token.
	temp map[string][2]string
	reqs []received
	// fail, when set, answers a request instead of the fake (status 0:
	// let the fake answer); n counts the requests so far, from 1.
	fail func(op string, n int) (status int, body string)
	// mutate edits a successful answer before it is sent.
	mutate func(op string, resp map[string]any)
}

func newFakeKMS(t *testing.T) *fakeKMS {
	t.Helper()
	f := &fakeKMS{t: t, now: time.Now, keys: map[string]*fakeKey{}, temp: map[string][2]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeKMS) addKey(id string) *fakeKey {
	k := &fakeKey{state: wire.KeyStateEnabled, master: make([]byte, 32), created: "1700000000000"}
	rand.Read(k.master)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[id] = k
	return k
}

func (f *fakeKMS) setState(id, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[id].state = state
}

func (f *fakeKMS) addTemp(ak, sk, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.temp[ak] = [2]string{sk, token}
}

func (f *fakeKMS) received() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.reqs...)
}

func (f *fakeKMS) last(t *testing.T) received {
	t.Helper()
	r := f.received()
	if len(r) == 0 {
		t.Fatal("the fake KMS received no request")
	}
	return r[len(r)-1]
}

func (f *fakeKMS) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

func (f *fakeKMS) setFail(fn func(op string, n int) (int, string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fn
}

func (f *fakeKMS) setMutate(fn func(op string, resp map[string]any)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mutate = fn
}

// fakeRequestID is the X-Request-Id of every answer of the fake.
const fakeRequestID = "5f0c8e1d2b3a49a6b7c8d9e0f1a2b3c4"

// upperHex is how the service writes cipher_text and key material.
func upperHex(b []byte) string { return strings.ToUpper(hex.EncodeToString(b)) }

func kmsError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(wire.ErrorBody{Error: wire.ErrorDetail{Code: code, Message: msg}})
}

// gatewayError is the API gateway's shape: the code at the top level.
func gatewayError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error_code": code, "error_msg": msg, "request_id": fakeRequestID})
}

func (f *fakeKMS) secretKey(ak string) ([]byte, bool) {
	if ak == testAK {
		return []byte(testSK), true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.temp[ak]
	return []byte(c[0]), ok
}

func (f *fakeKMS) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(wire.HeaderRequestID, fakeRequestID)
	path, hasPrefix := strings.CutPrefix(r.URL.Path, f.prefix+"/v1.0/")
	project, op, ok := strings.Cut(path, "/kms/")
	if r.Method != http.MethodPost || !hasPrefix || !ok {
		kmsError(w, http.StatusNotFound, wire.CodeBadURL, "no such operation "+r.Method+" "+r.URL.Path)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		kmsError(w, http.StatusBadRequest, wire.CodeBadJSON, "read body")
		return
	}
	v := signer.Verifier{SecretKey: f.secretKey}
	ak, err := v.Verify(r, body, f.now())
	if err != nil {
		gatewayError(w, http.StatusUnauthorized, wire.CodeGatewayAuth, "Incorrect IAM authentication information: "+err.Error())
		return
	}
	token := r.Header.Get(signer.HeaderSecurityToken)
	if ak != testAK {
		f.mu.Lock()
		want := f.temp[ak][1]
		f.mu.Unlock()
		if token != want {
			gatewayError(w, http.StatusUnauthorized, wire.CodeGatewayAuth, "security token does not belong to the access key")
			return
		}
	} else if token != "" {
		gatewayError(w, http.StatusUnauthorized, wire.CodeGatewayAuth, "security token with a permanent access key")
		return
	}
	if project != testProject || r.Header.Get(wire.HeaderProjectID) != testProject {
		kmsError(w, http.StatusForbidden, wire.CodeBadProject, "project "+project+" / X-Project-Id "+r.Header.Get(wire.HeaderProjectID))
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		kmsError(w, http.StatusBadRequest, wire.CodeBadJSON, "content type "+r.Header.Get("Content-Type"))
		return
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		kmsError(w, http.StatusBadRequest, wire.CodeBadJSON, "body is not a JSON object")
		return
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, received{op: op, path: r.URL.Path, accessKey: ak, token: token, header: r.Header.Clone(), body: members})
	n, fail, mutate := len(f.reqs), f.fail, f.mutate
	f.mu.Unlock()
	if fail != nil {
		if status, msg := fail(op, n); status != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, msg)
			return
		}
	}
	var resp map[string]any
	var status int
	var code, msg string
	switch op {
	case wire.OpCreateDataKey:
		resp, status, code, msg = f.createDataKey(body)
	case wire.OpEncryptDataKey:
		resp, status, code, msg = f.encryptDataKey(body)
	case wire.OpDecryptDataKey:
		resp, status, code, msg = f.decryptDataKey(body)
	case wire.OpDescribeKey:
		resp, status, code, msg = f.describeKey(body)
	default:
		status, code, msg = http.StatusNotFound, wire.CodeBadURL, "no such operation "+op
	}
	if code != "" {
		kmsError(w, status, code, msg)
		return
	}
	if mutate != nil {
		mutate(op, resp)
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	json.NewEncoder(w).Encode(resp)
}

// decodeStrict decodes a request into v, whose fields are all strings (or
// the encryption_context object), refusing unknown members and numbers.
func decodeStrict(body []byte, v any) bool {
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	return d.Decode(v) == nil
}

// checkOptional answers as the service does for the optional members that
// a plain (not level-4) KMS refuses or checks.
func checkOptional(sequence, pin, pinType string) (int, string, string) {
	switch {
	case sequence != "" && len(sequence) != wire.SequenceLength:
		return http.StatusBadRequest, wire.CodeBadSequence, "sequence is invalid."
	case pin != "":
		return http.StatusBadRequest, wire.CodeBadParameter, "pin is not supported."
	case pinType != "" && pinType != wire.PinTypeCipherText && pinType != wire.PinTypePlainText:
		return http.StatusBadRequest, wire.CodeBadParameter, "pin_type is invalid."
	}
	return 0, "", ""
}

// usableKey looks up a CMK for a data key operation.
func (f *fakeKMS) usableKey(id string) (*fakeKey, int, string, string) {
	if !wire.ValidKeyID(id) {
		return nil, http.StatusBadRequest, wire.CodeBadKeyID, "key_id is invalid."
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.keys[id]
	switch {
	case !ok:
		return nil, http.StatusNotFound, wire.CodeKeyNotFound, "The key does not exist."
	case k.state == wire.KeyStateDisabled:
		return nil, http.StatusBadRequest, wire.CodeKeyDisabled, "The key is disabled."
	case k.state == wire.KeyStatePendingDeletion:
		return nil, http.StatusBadRequest, wire.CodeKeyPendingDeletion, "The key is pending deletion."
	case k.state != wire.KeyStateEnabled:
		return nil, http.StatusBadRequest, wire.CodeBadParameter, "The key is not enabled."
	}
	return k, 0, "", ""
}

// bindingOf is what a request binds to: additional_authenticated_data or
// the encryption_context, kept apart.
func bindingOf(aad string, ctx map[string]string) []byte {
	if ctx != nil {
		raw, _ := json.Marshal(ctx) // sorted keys
		return append([]byte("ctx:"), raw...)
	}
	return []byte("aad:" + aad)
}

func seal(k *fakeKey, plain, aad []byte) []byte {
	block, _ := aes.NewCipher(k.master)
	gcm, _ := cipher.NewGCM(block)
	nonce := make([]byte, gcm.NonceSize())
	rand.Read(nonce)
	return gcm.Seal(nonce, nonce, plain, aad)
}

func open(k *fakeKey, sealed, aad []byte) ([]byte, bool) {
	block, _ := aes.NewCipher(k.master)
	gcm, _ := cipher.NewGCM(block)
	if len(sealed) < gcm.NonceSize() {
		return nil, false
	}
	out, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], aad)
	return out, err == nil
}

func badRequest(code, msg string) (map[string]any, int, string, string) {
	return nil, http.StatusBadRequest, code, msg
}

func (f *fakeKMS) createDataKey(body []byte) (map[string]any, int, string, string) {
	var req wire.CreateDataKeyRequest
	if !decodeStrict(body, &req) {
		return badRequest(wire.CodeBadJSON, "The request body is invalid.")
	}
	k, status, code, msg := f.usableKey(req.KeyID)
	if k == nil {
		return nil, status, code, msg
	}
	if status, code, msg := checkOptional(req.Sequence, req.Pin, req.PinType); code != "" {
		return nil, status, code, msg
	}
	// datakey_length wins over key_spec; neither means 256 bits.
	bits, ok := 256, true
	if req.KeySpec != "" {
		bits, ok = wire.DataKeySpecs[req.KeySpec]
	}
	if req.DataKeyLength != "" {
		bits, ok = wire.ParseDecimal(req.DataKeyLength, 8, 8192)
	}
	if !ok || bits%8 != 0 {
		return badRequest(wire.CodeBadDataKeyLength, "datakey_length is invalid.")
	}
	dek := make([]byte, bits/8)
	rand.Read(dek)
	return map[string]any{
		"key_id":      req.KeyID,
		"plain_text":  upperHex(dek),
		"cipher_text": upperHex(seal(k, dek, bindingOf(req.AdditionalAuthenticatedData, req.EncryptionContext))),
	}, 0, "", ""
}

type encryptRequest struct {
	KeyID                       string            `json:"key_id"`
	PlainText                   string            `json:"plain_text"`
	DataKeyPlainLength          string            `json:"datakey_plain_length"`
	EncryptionContext           map[string]string `json:"encryption_context"`
	AdditionalAuthenticatedData string            `json:"additional_authenticated_data"`
	Sequence                    string            `json:"sequence"`
	Pin                         string            `json:"pin"`
	PinType                     string            `json:"pin_type"`
	KeySpec                     string            `json:"key_spec"`
}

func (f *fakeKMS) encryptDataKey(body []byte) (map[string]any, int, string, string) {
	var req encryptRequest
	if !decodeStrict(body, &req) {
		return badRequest(wire.CodeBadJSON, "The request body is invalid.")
	}
	k, status, code, msg := f.usableKey(req.KeyID)
	if k == nil {
		return nil, status, code, msg
	}
	if status, code, msg := checkOptional(req.Sequence, req.Pin, req.PinType); code != "" {
		return nil, status, code, msg
	}
	if req.KeySpec != "" {
		return badRequest(wire.CodeBadParameter, "key_spec is not supported.")
	}
	n, ok := wire.ParseDecimal(req.DataKeyPlainLength, 1, wire.MaxDataKeyBytes)
	if !ok {
		return badRequest(wire.CodeBadPlainLength, "datakey_plain_length is invalid.")
	}
	plain, err := hex.DecodeString(req.PlainText)
	if err != nil || len(plain) != n+sha256.Size {
		return badRequest(wire.CodeBadPlainText, "plain_text is invalid.")
	}
	if sum := sha256.Sum256(plain[:n]); !bytes.Equal(sum[:], plain[n:]) {
		return badRequest(wire.CodeEncryptDigest, "The digest of plain_text does not match.")
	}
	return map[string]any{
		"key_id":         req.KeyID,
		"cipher_text":    upperHex(seal(k, plain[:n], bindingOf(req.AdditionalAuthenticatedData, req.EncryptionContext))),
		"datakey_length": strconv.Itoa(n),
	}, 0, "", ""
}

func (f *fakeKMS) decryptDataKey(body []byte) (map[string]any, int, string, string) {
	var req wire.DecryptDataKeyRequest
	if !decodeStrict(body, &req) {
		return badRequest(wire.CodeBadJSON, "The request body is invalid.")
	}
	k, status, code, msg := f.usableKey(req.KeyID)
	if k == nil {
		return nil, status, code, msg
	}
	if status, code, msg := checkOptional(req.Sequence, "", ""); code != "" {
		return nil, status, code, msg
	}
	n, ok := wire.ParseDecimal(req.DataKeyCipherLength, 1, wire.MaxDataKeyBytes)
	if !ok {
		return badRequest(wire.CodeBadCipherLength, "datakey_cipher_length is invalid.")
	}
	sealed, err := hex.DecodeString(req.CipherText)
	if err != nil {
		return badRequest(wire.CodeBadCipherText, "cipher_text is invalid.")
	}
	plain, ok := open(k, sealed, bindingOf(req.AdditionalAuthenticatedData, req.EncryptionContext))
	if !ok {
		return badRequest(wire.CodeBadCipherText, "Failed to decrypt cipher_text.")
	}
	if len(plain) != n {
		return badRequest(wire.CodeBadCipherLength, "datakey_cipher_length does not match.")
	}
	sum := sha256.Sum256(plain)
	return map[string]any{
		"data_key":       upperHex(plain),
		"datakey_length": strconv.Itoa(n),
		"datakey_dgst":   upperHex(sum[:]),
	}, 0, "", ""
}

func (f *fakeKMS) describeKey(body []byte) (map[string]any, int, string, string) {
	var req wire.DescribeKeyRequest
	if !decodeStrict(body, &req) {
		return badRequest(wire.CodeBadJSON, "The request body is invalid.")
	}
	if !wire.ValidKeyID(req.KeyID) {
		return badRequest(wire.CodeBadKeyID, "key_id is invalid.")
	}
	if status, code, msg := checkOptional(req.Sequence, "", ""); code != "" {
		return nil, status, code, msg
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.keys[req.KeyID]
	if !ok {
		return nil, http.StatusNotFound, wire.CodeKeyNotFound, "The key does not exist."
	}
	return map[string]any{"key_info": map[string]any{
		"key_id":                    req.KeyID,
		"domain_id":                 "b168fe00ff56492495a7d22974df2d0b",
		"key_alias":                 k.alias,
		"realm":                     testRegion,
		"key_spec":                  "AES_256",
		"key_usage":                 "ENCRYPT_DECRYPT",
		"key_description":           "test key",
		"creation_date":             k.created,
		"scheduled_deletion_date":   k.deletion,
		"key_state":                 k.state,
		"default_key_flag":          "0",
		"key_type":                  "1",
		"expiration_time":           "",
		"origin":                    "kms",
		"key_rotation_enabled":      "false",
		"sys_enterprise_project_id": "0",
		"keystore_id":               "0",
	}}, 0, "", ""
}

// writeSK writes an SK file with the given content and mode.
func writeSK(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sk")
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask
		t.Fatal(err)
	}
	return p
}

// staticConfig is a valid static-credentials config for f.
func staticConfig(t *testing.T, f *fakeKMS) Config {
	return Config{
		Endpoint:      f.srv.URL,
		ProjectID:     testProject,
		Region:        testRegion,
		AccessKey:     testAK,
		SecretKeyFile: writeSK(t, testSK+"\n", 0o600),
		Timeout:       5 * time.Second,
	}
}

func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	return c
}
