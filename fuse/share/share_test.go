package share

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kmsagent/agent/secret"
	"kmsagent/agent/tstest"
	"kmsagent/fuse/cryptfs"
	"kmsagent/fuse/cryptocore"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/nametransform"
)

func TestFormat(t *testing.T) {
	ctx := context.Background()
	kms, keyID := tstest.LocalKMS(t, "")
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "lost+found"), 0o700)
	e, err := Format(ctx, kms, dir, keyID, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{nametransform.DirIVFilename, envelope.FileName} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	iv, _ := os.ReadFile(filepath.Join(dir, nametransform.DirIVFilename))
	if _, err := Format(ctx, kms, dir, keyID, false); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second format: %v", err)
	}
	e2, err := Format(ctx, kms, dir, keyID, true)
	if err != nil {
		t.Fatal(err)
	}
	if e2.VolumeUUID == e.VolumeUUID {
		t.Fatal("forced format kept the volume UUID")
	}
	iv2, _ := os.ReadFile(filepath.Join(dir, nametransform.DirIVFilename))
	if string(iv) != string(iv2) {
		t.Fatal("forced format replaced gocryptfs.diriv")
	}
	backups, _ := filepath.Glob(filepath.Join(dir, envelope.FileName+".bak-*"))
	if len(backups) != 1 {
		t.Fatalf("old envelope not kept: %v", backups)
	}

	notEmpty := t.TempDir()
	os.WriteFile(filepath.Join(notEmpty, "data"), []byte("x"), 0o600)
	var notEmptyErr *NotEmptyError
	if _, err := Format(ctx, kms, notEmpty, keyID, false); !errors.As(err, &notEmptyErr) {
		t.Fatalf("non-empty: %v", err)
	}
	if _, err := Format(ctx, kms, t.TempDir(), "3f1b6c9e-0000-4000-8000-000000000000", false); err == nil {
		t.Fatal("unknown key accepted")
	}
}

// makeTree writes a diriv and a few encrypted names, as gocryptfs would.
func makeTree(t *testing.T, master *secret.Key) string {
	t.Helper()
	dir := t.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := nametransform.WriteDirIVAt(int(d.Fd())); err != nil {
		t.Fatal(err)
	}
	iv, _ := nametransform.ReadDirIVAt(int(d.Fd()))
	core, err := cryptocore.New(master)
	if err != nil {
		t.Fatal(err)
	}
	defer core.Wipe()
	nt := nametransform.New(core.NameBlock())
	for _, name := range []string{"a.txt", "photos", "notes"} {
		c, err := nt.EncryptName(name, iv)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, c), nil, 0o600)
	}
	os.WriteFile(filepath.Join(dir, "README"), []byte("planted"), 0o600)
	return dir
}

func TestImportChecksKey(t *testing.T) {
	ctx := context.Background()
	kms, keyID := tstest.LocalKMS(t, "")
	master, _ := secret.Random(32)
	defer master.Wipe()
	other, _ := secret.Random(32)
	defer other.Wipe()
	dir := makeTree(t, master)

	if _, err := Import(ctx, kms, dir, keyID, other, false); !errors.Is(err, cryptfs.ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, envelope.FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("envelope written for a wrong key")
	}
	e, err := Import(ctx, kms, dir, keyID, master, false)
	if err != nil {
		t.Fatal(err)
	}
	k, err := e.Unwrap(ctx, kms)
	if err != nil || !k.Equal(master) {
		t.Fatalf("unwrap imported: %v", err)
	}
	k.Wipe()
	if _, err := Import(ctx, kms, t.TempDir(), keyID, master, false); err == nil || !strings.Contains(err.Error(), "not a gocryptfs") {
		t.Fatalf("empty dir: %v", err)
	}
	conf := makeTree(t, master)
	os.WriteFile(filepath.Join(conf, "gocryptfs.conf"), []byte(`{"Version":2,"FeatureFlags":["HKDF","GCMIV128","DirIV","PlaintextNames"]}`), 0o400)
	if _, err := Import(ctx, kms, conf, keyID, master, false); err == nil || !strings.Contains(err.Error(), "PlaintextNames") {
		t.Fatalf("plaintextnames tree: %v", err)
	}
}

func TestParseMasterKey(t *testing.T) {
	const hex = "6f717d8b6b5f8e8a11bb8ee4b65b7c9d0a8f3e7c2b1d4e5f60718293a4b5c6d7"
	dashed := hex[:8] + "-" + hex[8:16] + "-" + hex[16:24] + "-" + hex[24:32] + "-" + hex[32:40] + "-" + hex[40:48] + "-" + hex[48:56] + "-" + hex[56:] + "\n"
	for _, in := range []string{hex, dashed, "  " + hex + "\n"} {
		k, err := ParseMasterKey([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		k.Wipe()
	}
	for _, in := range []string{"", hex[:62], hex + "00", "zz" + hex[2:]} {
		if _, err := ParseMasterKey([]byte(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestLock(t *testing.T) {
	run := t.TempDir()
	dir := t.TempDir()
	l, err := Acquire(run, dir, "/mnt/a")
	if err != nil {
		t.Fatal(err)
	}
	if held, _ := Held(run, dir); !held {
		t.Fatal("lock not seen")
	}
	// A second path to the same directory shares the lock.
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(dir, link)
	if _, err := Acquire(run, link, "/mnt/b"); err == nil || !strings.Contains(err.Error(), "/mnt/a") {
		t.Fatalf("second mount: %v", err)
	}
	l.Release()
	if held, _ := Held(run, dir); held {
		t.Fatal("lock still held")
	}
	l2, err := Acquire(run, dir, "/mnt/b")
	if err != nil {
		t.Fatal(err)
	}
	l2.Release()
}

func TestParseMountInfo(t *testing.T) {
	in := `22 1 0:21 / /proc rw,nosuid - proc proc rw
90 29 0:45 / /mnt/a\040b rw,nosuid,nodev,relatime - fuse.kmsagent /srv/cipher\040dir rw,user_id=0,group_id=0
91 29 0:46 / /mnt/g rw - fuse.gocryptfs /srv/g rw
`
	ms, err := ParseMountInfo(strings.NewReader(in))
	if err != nil || len(ms) != 1 {
		t.Fatalf("%v %v", ms, err)
	}
	if ms[0].Mountpoint != "/mnt/a b" || ms[0].CipherDir != "/srv/cipher dir" {
		t.Fatalf("%+v", ms[0])
	}
}

func FuzzParseMountInfo(f *testing.F) {
	f.Add("90 29 0:45 / /mnt/a\\040b rw - fuse.kmsagent /srv/c rw\n")
	f.Fuzz(func(t *testing.T, s string) {
		ParseMountInfo(strings.NewReader(s))
	})
}

// TestCheckMountpoint: the early check refuses what the mount would: a
// symlink anywhere in the path, a missing directory, a file.
func TestCheckMountpoint(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	os.Mkdir(real, 0o755)
	os.Symlink(real, filepath.Join(dir, "link"))
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	tests := []struct {
		path string
		want string // "" means accepted
	}{
		{real, ""},
		{filepath.Join(dir, "link"), "symbolic link"},
		{filepath.Join(dir, "link", "."), "symbolic link"},
		{filepath.Join(dir, "missing"), "no such file"},
		{filepath.Join(dir, "file"), "not a directory"},
	}
	for _, tt := range tests {
		err := CheckMountpoint(tt.path)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: %v, want %q", tt.path, err, tt.want)
		}
	}
}

// TestWorkerRecord: a published record is read back and tells a live
// worker from a dead one; Release removes it.
func TestWorkerRecord(t *testing.T) {
	run := filepath.Join(t.TempDir(), "run")
	dir := t.TempDir()
	l, err := Acquire(run, dir, "/mnt/a")
	if err != nil {
		t.Fatal(err)
	}
	start, err := processStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	w := Worker{PID: os.Getpid(), Start: start, CipherDir: dir, Mountpoint: "/mnt/a", MountID: 42, Dev: 77}
	if err := l.Publish(w); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(run); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("run directory: %v %v; want it readable by all", fi.Mode(), err)
	}
	ws, err := Workers(run)
	if err != nil || len(ws) != 1 || ws[0] != w {
		t.Fatalf("Workers: %+v %v", ws, err)
	}
	if ws[0].Liveness() != Alive {
		t.Fatal("this process is not alive")
	}
	reused := w
	reused.Start++ // a later process with the same PID
	if reused.Liveness() != Gone {
		t.Fatal("a process with another start time taken for the worker")
	}
	l.Release()
	if ws, _ := Workers(run); len(ws) != 0 {
		t.Fatalf("record left after Release: %+v", ws)
	}
}

func FuzzParseWorker(f *testing.F) {
	f.Add([]byte(`{"pid":12,"start":345,"cipher_dir":"/srv/c","mountpoint":"/mnt/a","mount_id":90,"dev":46}`))
	f.Add([]byte(`{"pid":0}`))
	f.Add([]byte(`{"pid":1,"mount_id":1,"cipher_dir":"c","mountpoint":"/m","extra":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := parseWorker(b)
		if err == nil && (w.PID <= 0 || w.MountID <= 0 || !filepath.IsAbs(w.Mountpoint) || !filepath.IsAbs(w.CipherDir)) {
			t.Fatalf("accepted an incomplete record: %+v", w)
		}
	})
}
