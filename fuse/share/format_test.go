package share

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"kmsagent/agent/safepath"
	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/nametransform"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	slices.Sort(names)
	return names
}

// TestFormatModes: format makes the cipher root 0700 (creating it and its
// parents, 0755, when missing) and the envelope 0600; import restricts an
// adopted tree the same way; rewrap keeps the envelope 0600.
func TestFormatModes(t *testing.T) {
	ctx := context.Background()
	kms, keyID := tstest.LocalKMS(t, "")
	old := unix.Umask(0o022)
	defer unix.Umask(old)
	base := t.TempDir()

	fresh := filepath.Join(base, "srv", "shares", "a")
	if _, err := Format(ctx, kms, fresh, keyID, false); err != nil {
		t.Fatal(err)
	}
	existing := filepath.Join(base, "b")
	os.Mkdir(existing, 0o755)
	if _, err := Format(ctx, kms, existing, keyID, false); err != nil {
		t.Fatal(err)
	}
	master, _ := secret.Random(32)
	defer master.Wipe()
	adopted := makeTree(t, master)
	os.Chmod(adopted, 0o755)
	if _, err := Import(ctx, kms, adopted, keyID, master, false); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{fresh, existing, adopted} {
		if m := mode(t, dir); m != RootMode {
			t.Errorf("%s: mode %v, want %v", dir, m, os.FileMode(RootMode))
		}
		if m := mode(t, filepath.Join(dir, envelope.FileName)); m != 0o600 {
			t.Errorf("%s: envelope mode %v, want 0600", dir, m)
		}
	}
	for _, p := range []string{filepath.Join(base, "srv"), filepath.Join(base, "srv", "shares")} {
		if m := mode(t, p); m != 0o755 {
			t.Errorf("parent %s: mode %v, want 0755 as mkdir -p makes it", p, m)
		}
	}

	info, _ := kms.CreateKey(ctx, "", "")
	if _, oldKey, err := Rewrap(ctx, kms, fresh, info.ID); err != nil || oldKey != keyID {
		t.Fatalf("rewrap: %q %v", oldKey, err)
	}
	if m := mode(t, filepath.Join(fresh, envelope.FileName)); m != 0o600 {
		t.Errorf("envelope after rewrap: mode %v, want 0600", m)
	}
}

// TestFormatAllOrNothing: a format that fails leaves the directory as it
// was (no diriv, no backup, its old mode, no directories it made), so
// fixing the cause and running it again needs no --force.
func TestFormatAllOrNothing(t *testing.T) {
	ctx := context.Background()
	kms, keyID := tstest.LocalKMS(t, "")
	base := t.TempDir()

	// Failing at the envelope: a directory in its place cannot be
	// backed up or replaced.
	dir := filepath.Join(base, "c")
	os.Mkdir(dir, 0o755)
	os.Mkdir(filepath.Join(dir, envelope.FileName), 0o700)
	before := listDir(t, dir)
	if _, err := Format(ctx, kms, dir, keyID, true); err == nil {
		t.Fatal("format over a directory named like the envelope succeeded")
	}
	if got := listDir(t, dir); !slices.Equal(got, before) {
		t.Errorf("failed format left %v, want %v", got, before)
	}
	if m := mode(t, dir); m != 0o755 {
		t.Errorf("failed format left mode %v, want the old 0755", m)
	}
	os.Remove(filepath.Join(dir, envelope.FileName))
	if _, err := Format(ctx, kms, dir, keyID, false); err != nil {
		t.Fatalf("retry without --force: %v", err)
	}

	// Failing at the KMS: the directories made for it go again.
	missing := filepath.Join(base, "new", "share")
	if _, err := Format(ctx, kms, missing, "3f1b6c9e-0000-4000-8000-000000000000", false); err == nil {
		t.Fatal("unknown key accepted")
	}
	if _, err := os.Lstat(filepath.Join(base, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed format left the directories it made: %v", err)
	}
	if _, err := Format(ctx, kms, missing, keyID, false); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{nametransform.DirIVFilename, envelope.FileName} {
		if _, err := os.Lstat(filepath.Join(missing, name)); err != nil {
			t.Error(err)
		}
	}
}

// TestFormatRefusesSymlinks: format, import and rewrap do not follow a
// symlink in the cipher directory's path, so whoever owns a directory on
// the way cannot point root's writes elsewhere.
func TestFormatRefusesSymlinks(t *testing.T) {
	ctx := context.Background()
	kms, keyID := tstest.LocalKMS(t, "")
	base := t.TempDir()
	master, _ := secret.Random(32)
	defer master.Wipe()
	tree := makeTree(t, master)
	shared := filepath.Join(base, "shared")
	if _, err := Format(ctx, kms, shared, keyID, false); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(base, "empty")
	os.Mkdir(empty, 0o755)
	for _, target := range []string{tree, shared, empty} {
		os.Symlink(target, filepath.Join(base, "link-"+filepath.Base(target)))
	}
	listings := map[string][]string{}
	for _, d := range []string{tree, shared, empty} {
		listings[d] = listDir(t, d)
	}

	if _, err := Format(ctx, kms, filepath.Join(base, "link-empty"), keyID, false); !errors.Is(err, safepath.ErrSymlink) {
		t.Errorf("format through a symlink: %v", err)
	}
	if _, err := Format(ctx, kms, filepath.Join(base, "link-empty", "sub"), keyID, false); !errors.Is(err, safepath.ErrSymlink) {
		t.Errorf("format below a symlink: %v", err)
	}
	if _, err := Import(ctx, kms, filepath.Join(base, "link-"+filepath.Base(tree)), keyID, master, false); !errors.Is(err, safepath.ErrSymlink) {
		t.Errorf("import through a symlink: %v", err)
	}
	if _, _, err := Rewrap(ctx, kms, filepath.Join(base, "link-shared"), keyID); !errors.Is(err, safepath.ErrSymlink) {
		t.Errorf("rewrap through a symlink: %v", err)
	}
	for d, want := range listings {
		if got := listDir(t, d); !slices.Equal(got, want) {
			t.Errorf("%s changed through a symlink: %v, want %v", d, got, want)
		}
	}
}
