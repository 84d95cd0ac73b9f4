package kmsserver_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"kmsagent/agent/tstest"
	"kmsagent/kmsclient/huaweicloud/signer"
	"kmsagent/kmsclient/huaweicloud/wire"
	"kmsagent/kmsclient/kmsserver"
)

// FuzzRequest feeds arbitrary bodies, signed, to every operation: the
// server must answer, never panic, and every non-200 answer must be a KMS
// error body. Each request is signed a second later than the one before,
// so repeated inputs are not refused as replays.
func FuzzRequest(f *testing.F) {
	store, keyID := tstest.LocalKMS(f, "fuzz")
	var clock struct {
		sync.Mutex
		t time.Time
	}
	clock.t = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time {
		clock.Lock()
		defer clock.Unlock()
		return clock.t
	}
	h := kmsserver.New(store, kmsserver.Options{
		Clients:           []kmsserver.Client{{AccessKey: testAK, SecretKey: []byte(testSK), Keys: []string{kmsserver.AllKeys}}},
		Now:               now,
		RequestsPerSecond: 1e9,
	})
	ops := []string{wire.OpCreateDataKey, wire.OpCreateDataKeyNoPlaintext, wire.OpEncryptDataKey, wire.OpDecryptDataKey, wire.OpDescribeKey}
	seeds := []string{
		`{"key_id":"` + keyID + `","datakey_length":"256","additional_authenticated_data":"v"}`,
		`{"key_id":"fuzz","plain_text":"00","datakey_plain_length":"1","encryption_context":{"binding":"v"}}`,
		`{"key_id":"fuzz","cipher_text":"01","datakey_cipher_length":"32","additional_authenticated_data":"v"}`,
		`{"key_id":"alias/fuzz"}`,
		`{"key_id":"fuzz","encryption_context":{"a":"b","c":"d"}}`,
		`{"key_id":"` + keyID + `"}`,
		`{"key_id":"` + keyID + `","key_spec":"HMAC_384","sequence":"919c82d4-8046-4722-9094-35c3c6524cff","pin_type":"PlainText"}`,
		`{"key_id":"` + keyID + `","key_spec":"SM4","datakey_length":"128","pin":"1"}`,
		`{"key_id":"` + keyID + `","plain_text":"00","datakey_plain_length":"1","key_spec":"RSA","pin_type":"x"}`,
		`{"key_id":"` + keyID + `","cipher_text":"0A0b","datakey_cipher_length":"1","sequence":"1"}`,
		`[]`, `null`, `{"key_id":1}`, ``,
	}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		path := wire.Path("p", ops[int(op)%len(ops)])
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		clock.Lock()
		clock.t = clock.t.Add(time.Second)
		date := clock.t
		clock.Unlock()
		if err := signer.Sign(req, body, signer.Credentials{AccessKey: testAK, SecretKey: []byte(testSK)}, date); err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusOK {
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("200 with invalid JSON %q", rec.Body.Bytes())
			}
			return
		}
		var eb wire.ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
			t.Fatalf("status %d with body %q", rec.Code, rec.Body.Bytes())
		}
		if rec.Code >= 500 {
			t.Fatalf("server error for a client's body: %d %s", rec.Code, rec.Body.Bytes())
		}
	})
}
