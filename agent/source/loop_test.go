package source

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kmsagent/agent/tstest"
	"kmsagent/agent/uuid"
	"kmsagent/blockdev/crypt"
)

// attach attaches image read-only to a loop device for the test.
func attach(t *testing.T, image string) (path, name string) {
	t.Helper()
	l, err := crypt.Attach(image, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Detach() })
	return l.Path, strings.TrimPrefix(l.Path, "/dev/")
}

func writeImage(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoopUUID finds LUKS2 images on real loop devices, by UUID and by a
// link, through the system's /sys and /dev.
func TestLoopUUID(t *testing.T) {
	tstest.NeedRoot(t, "to attach a loop device")
	ctx := context.Background()
	u := uuid.New().String()
	image := writeImage(t, luksHeader(t, u))
	dev, name := attach(t, image)

	got, err := Resolve(ctx, "UUID="+u)
	if err != nil || got != dev {
		t.Fatalf("Resolve(UUID=%s) = %q, %v; want %s", u, got, err, dev)
	}
	link := filepath.Join(t.TempDir(), "by-id-link")
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
	if got, err := Resolve(ctx, link); err != nil || got != dev {
		t.Fatalf("Resolve(%s) = %q, %v; want %s", link, got, err, dev)
	}
	for _, spec := range []string{"UUID=" + u, link, dev} {
		if ok, err := Matches(ctx, spec, name); !ok || err != nil {
			t.Errorf("Matches(%s, %s) = %v, %v", spec, name, ok, err)
		}
	}
	other := uuid.New().String()
	if _, err := Resolve(ctx, "UUID="+other); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve of an absent UUID = %v", err)
	}
	if ok, err := Matches(ctx, "UUID="+other, name); ok || err != nil {
		t.Errorf("Matches(absent UUID, %s) = %v, %v", name, ok, err)
	}

	// A second disk with the same header: a clone of the first.
	clone, _ := attach(t, writeImage(t, luksHeader(t, u)))
	_, err = Resolve(ctx, "UUID="+u)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrAmbiguous) || !slices.Contains(e.Devices, dev) || !slices.Contains(e.Devices, clone) {
		t.Fatalf("Resolve with a clone attached = %v; want ErrAmbiguous naming %s and %s", err, dev, clone)
	}
}

// TestLoopCryptsetup finds a header cryptsetup wrote.
func TestLoopCryptsetup(t *testing.T) {
	tstest.NeedRoot(t, "to attach a loop device")
	cs := tstest.NeedCryptsetup(t)
	dir := t.TempDir()
	image, key := filepath.Join(dir, "disk.img"), filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("test passphrase"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(image, make([]byte, 20<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	u := uuid.New().String()
	out, err := exec.Command(cs, "--batch-mode", "--disable-locks", "luksFormat", "--type", "luks2",
		"--uuid", u, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
		"--key-file", key, image).CombinedOutput()
	if err != nil {
		t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
	}
	dev, _ := attach(t, image)
	if got, err := Resolve(context.Background(), "UUID="+strings.ToUpper(u)); err != nil || got != dev {
		t.Fatalf("Resolve(UUID=%s) = %q, %v; want %s", u, got, err, dev)
	}
}
