package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/kmsclient/local"
)

// TestNoKeyMaterialInLog writes the records of a real wrap, unwrap,
// failed unwrap and rewrap through the local KMS and scans the log for
// the data key in every form it could take in text. As a positive
// control the same scan must find the key in a buffer that holds it.
func TestNoKeyMaterialInLog(t *testing.T) {
	ctx := context.Background()
	kms, err := local.Open(filepath.Join(t.TempDir(), "kms"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := kms.CreateKey(ctx, "audit-test", "")
	if err != nil {
		t.Fatal(err)
	}
	const binding = "6f1c2d3e-4b5a-4c6d-8e7f-901a2b3c4d5e"
	path := filepath.Join(logDir(t), "audit.log")
	l, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	base := Record{Caller: LookupCaller(os.Getuid(), os.Getpid()), Volume: "data", Kind: KindShare, CMK: info.ID, Provider: kms.Provider()}
	write := func(op string, err error) {
		t.Helper()
		r := base
		r.Op = op
		if err := l.Write(ctx, r.WithError(err)); err != nil {
			t.Fatal(err)
		}
	}

	dk, err := kms.GenerateDataKey(ctx, info.ID, 32, binding)
	write(OpWrap, err)
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Wipe()
	key, err := kms.Decrypt(ctx, info.ID, dk.Wrapped, binding)
	write(OpUnwrap, err)
	if err != nil {
		t.Fatal(err)
	}
	defer key.Wipe()
	_, err = kms.Decrypt(ctx, info.ID, dk.Wrapped, "another-volume")
	write(OpUnwrap, err)
	if err == nil {
		t.Fatal("unwrap under another binding succeeded")
	}
	_, err = kms.ReEncrypt(ctx, info.ID, dk.Wrapped, info.ID, binding)
	write(OpRewrap, err)
	if err != nil {
		t.Fatal(err)
	}
	write(OpExportKey, nil)

	logged, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(logged, []byte("\n")); n != 5 {
		t.Fatalf("%d records, want 5", n)
	}
	if !bytes.Contains(logged, []byte(`"result":"invalid_ciphertext"`)) {
		t.Fatalf("the failed unwrap is not recorded as such:\n%s", logged)
	}

	k := key.Bytes()
	forms := map[string][]byte{
		"raw":           k,
		"hex":           []byte(hex.EncodeToString(k)),
		"HEX":           []byte(strings.ToUpper(hex.EncodeToString(k))),
		"base64":        []byte(base64.StdEncoding.EncodeToString(k)),
		"base64 raw":    []byte(base64.RawStdEncoding.EncodeToString(k)),
		"base64 url":    []byte(base64.RawURLEncoding.EncodeToString(k)),
		"first half":    k[:16],
		"second half":   k[16:],
		"hex, 1st half": []byte(hex.EncodeToString(k[:16])),
	}
	control := append([]byte("prefix "), []byte(base64.StdEncoding.EncodeToString(k))...)
	if !bytes.Contains(control, forms["base64"]) {
		t.Fatal("the scan does not find the key where it is")
	}
	for name, form := range forms {
		if bytes.Contains(logged, form) {
			t.Errorf("the log holds the key (%s)", name)
		}
	}
}
