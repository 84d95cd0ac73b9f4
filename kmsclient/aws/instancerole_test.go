package aws

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestInstanceRole checks that InstanceRole signs with the instance role's
// credential from IMDS even where the environment holds a static one, and
// that without it the default chain picks the static one first.
func TestInstanceRole(t *testing.T) {
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token":
			w.Write([]byte("imds-session"))
		case r.URL.Path == "/latest/meta-data/iam/security-credentials/":
			w.Write([]byte("host-role"))
		case r.URL.Path == "/latest/meta-data/iam/security-credentials/host-role":
			w.Write([]byte(`{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"ROLEKEY","SecretAccessKey":"role-secret","Token":"role-token","Expiration":"` +
				time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(imds.Close)
	var mu sync.Mutex
	var auth []string
	kms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.Write([]byte(okDecrypt().body))
	}))
	t.Cleanup(kms.Close)
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", "STATICKEY")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "static-secret")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")

	tests := []struct {
		name         string
		instanceRole bool
		wantKey      string
	}{
		{"instance role only", true, "ROLEKEY"},
		{"default chain", false, "STATICKEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			auth = nil
			mu.Unlock()
			c, err := New(context.Background(), Config{Region: "eu-west-1", Endpoint: kms.URL, InstanceRole: tt.instanceRole})
			if err != nil {
				t.Fatal(err)
			}
			k, err := c.Decrypt(context.Background(), testARN, []byte("wrapped"), "vol-uuid")
			if err != nil {
				t.Fatal(err)
			}
			k.Wipe()
			mu.Lock()
			defer mu.Unlock()
			if len(auth) != 1 || !strings.Contains(auth[0], "Credential="+tt.wantKey+"/") {
				t.Fatalf("Authorization %q, want a signature by %s", auth, tt.wantKey)
			}
		})
	}
}
