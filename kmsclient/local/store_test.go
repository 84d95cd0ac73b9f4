package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"kmsagent/kmsclient"
	"kmsagent/kmsclient/kmstest"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "kms"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	kmstest.Run(t, kmstest.Harness{
		KMS: s,
		NewKey: func(t *testing.T) string {
			info, err := s.CreateKey(ctx, "", "")
			if err != nil {
				t.Fatal(err)
			}
			return info.ID
		},
		Disable: func(t *testing.T, id string) {
			if err := s.DisableKey(ctx, id); err != nil {
				t.Fatal(err)
			}
		},
		ScheduleDeletion: func(t *testing.T, id string) {
			if _, err := s.ScheduleDeletion(ctx, id, 7); err != nil {
				t.Fatal(err)
			}
		},
		Rotate: func(t *testing.T, id string) {
			if _, err := s.RotateKey(ctx, id); err != nil {
				t.Fatal(err)
			}
		},
		MissingKeyID: "3f1b6c9e-0000-4000-8000-000000000000",
	})
}

func TestPermissions(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil {
		t.Fatal("opened a world-readable state directory")
	}
	os.Chmod(dir, 0o700)
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	info, err := s.CreateKey(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	os.Chmod(filepath.Join(dir, stateFile), 0o644)
	if _, err := s.DescribeKey(ctx, info.ID); err == nil {
		t.Fatal("used a world-readable key store")
	}
}

func TestPersistenceAndAliases(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kms")
	ctx := context.Background()
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := a.CreateKey(ctx, "disk-keys", "for disks")
	if err != nil {
		t.Fatal(err)
	}
	dk, err := a.GenerateDataKey(ctx, "alias/disk-keys", 64, "vol-1")
	if err != nil {
		t.Fatal(err)
	}
	defer dk.Wipe()
	if dk.KeyID != info.ID {
		t.Fatalf("data key names %q, want the key id %q", dk.KeyID, info.ID)
	}
	if _, err := a.CreateKey(ctx, "disk-keys", ""); !errors.Is(err, kmsclient.ErrInvalidRequest) {
		t.Fatalf("duplicate alias: %v", err)
	}
	for _, bad := range []string{"-x", "has space", "3f1b6c9e-0000-4000-8000-000000000000", string(make([]byte, 300))} {
		if _, err := a.CreateKey(ctx, bad, ""); !errors.Is(err, kmsclient.ErrInvalidRequest) {
			t.Errorf("alias %q accepted: %v", bad, err)
		}
	}

	// A second process (here: a second Store) sees the key and its rotation.
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Decrypt(ctx, "disk-keys", dk.Wrapped, "vol-1")
	if err != nil {
		t.Fatal(err)
	}
	got.Wipe()
	if _, err := a.RotateKey(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	d, err := b.DescribeKey(ctx, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Versions != 2 || d.Alias != "disk-keys" || d.Description != "for disks" {
		t.Fatalf("describe after rotation from another store: %+v", d)
	}
}

func TestDeletionLifecycle(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	info, err := s.CreateKey(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, days := range []int{0, 6, 1097} {
		if _, err := s.ScheduleDeletion(ctx, info.ID, days); !errors.Is(err, kmsclient.ErrInvalidRequest) {
			t.Errorf("%d days accepted: %v", days, err)
		}
	}
	if err := s.CancelDeletion(ctx, info.ID); !errors.Is(err, kmsclient.ErrInvalidRequest) {
		t.Errorf("cancel of a key not pending deletion: %v", err)
	}
	if _, err := s.ScheduleDeletion(ctx, info.ID, 7); err != nil {
		t.Fatal(err)
	}
	if err := s.EnableKey(ctx, info.ID); !errors.Is(err, kmsclient.ErrKeyPendingDeletion) {
		t.Errorf("enable while pending deletion: %v", err)
	}
	if err := s.CancelDeletion(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.DescribeKey(ctx, info.ID); d.State != kmsclient.KeyDisabled {
		t.Fatalf("after cancel: %s, want Disabled", d.State)
	}
	if err := s.EnableKey(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ScheduleDeletion(ctx, info.ID, 7); err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.Now().Add(8 * 24 * time.Hour) }
	if _, err := s.DescribeKey(ctx, info.ID); !errors.Is(err, kmsclient.ErrKeyNotFound) {
		t.Fatalf("key past its deletion date: %v", err)
	}
	if _, err := s.CreateKey(ctx, "", ""); err != nil { // purges on write
		t.Fatal(err)
	}
	keys, err := s.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Fatalf("%d keys after purge, want 1", len(keys))
	}
}

func TestDamagedStore(t *testing.T) {
	for name, content := range map[string]string{
		"not-json":       "garbage",
		"unknown-field":  `{"format":1,"keys":[],"extra":1}`,
		"future-format":  `{"format":9,"keys":[]}`,
		"short-material": `{"format":1,"keys":[{"id":"3f1b6c9e-0000-4000-8000-000000000000","state":"Enabled","created_at":"2026-01-01T00:00:00Z","versions":[{"version":1,"created_at":"2026-01-01T00:00:00Z","material":"AAAA"}]}]}`,
		"bad-id":         `{"format":1,"keys":[{"id":"x","state":"Enabled","created_at":"2026-01-01T00:00:00Z","versions":[]}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			if err := os.WriteFile(s.path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := s.ListKeys(context.Background())
			if err == nil {
				t.Fatal("damaged store loaded")
			}
			if !errors.Is(err, kmsclient.ErrUnavailable) {
				t.Fatalf("kind: %v", err)
			}
		})
	}
}

// TestConcurrentProcesses runs several processes that each create keys in
// the same store at once; no creation may be lost.
func TestConcurrentProcesses(t *testing.T) {
	if dir := os.Getenv("KMSAGENT_TEST_STORE"); dir != "" {
		s, err := Open(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		n, _ := strconv.Atoi(os.Getenv("KMSAGENT_TEST_N"))
		for i := 0; i < n; i++ {
			if _, err := s.CreateKey(context.Background(), "", ""); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		os.Exit(0)
	}
	dir := filepath.Join(t.TempDir(), "kms")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	const procs, each = 4, 15
	var wg sync.WaitGroup
	errs := make(chan error, procs+1)
	for i := 0; i < procs; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestConcurrentProcesses$")
			cmd.Env = append(os.Environ(), "KMSAGENT_TEST_STORE="+dir, "KMSAGENT_TEST_N="+strconv.Itoa(each))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("child: %v: %s", err, out)
			}
		}()
	}
	// Concurrent use within this process as well, through the same store.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < each; i++ {
			if _, err := s.CreateKey(context.Background(), "", ""); err != nil {
				errs <- err
				return
			}
			if _, err := s.ListKeys(context.Background()); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	keys, err := s.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != (procs+1)*each {
		t.Fatalf("%d keys, want %d: creations were lost", len(keys), (procs+1)*each)
	}
}

func TestErrorsAreOneLine(t *testing.T) {
	s := newStore(t)
	_, err := s.Decrypt(context.Background(), "nope", []byte{1}, "b")
	var kerr *kmsclient.Error
	if !errors.As(err, &kerr) {
		t.Fatalf("not a *kmsclient.Error: %T", err)
	}
	msg := err.Error()
	for _, c := range msg {
		if c == '\n' {
			t.Fatalf("multi-line error: %q", msg)
		}
	}
}

// TestValidAlias checks the alias rule's loop against the regular
// expression it replaces.
func TestValidAlias(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:/_.-]{0,254}$`)
	for _, c := range []string{"", "a", "9", ":", "/", "_", ".", "-", " ", "\n", "é", "\x00", "*"} {
		for _, n := range []int{1, 2, 254, 255, 256} {
			for _, s := range []string{strings.Repeat(c, n), "a" + strings.Repeat(c, n-1), "k" + strings.Repeat(c, n)} {
				if got, want := validAlias(s), re.MatchString(s); got != want {
					t.Errorf("%q: %v, want %v", s, got, want)
				}
			}
		}
	}
}
