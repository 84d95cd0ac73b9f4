package vmtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCompareVersions(t *testing.T) {
	sorted := []string{
		"vmlinuz-5.10.0-9-cloud-amd64",
		"vmlinuz-6.1.0-9-cloud-amd64",
		"vmlinuz-6.1.0-10-cloud-amd64",
		"vmlinuz-6.1.0-56-cloud-amd64",
		"vmlinuz-6.12.0-1-cloud-amd64",
	}
	shuffled := []string{sorted[3], sorted[0], sorted[4], sorted[2], sorted[1]}
	slices.SortFunc(shuffled, compareVersions)
	if !slices.Equal(shuffled, sorted) {
		t.Errorf("sorted %v, want %v", shuffled, sorted)
	}
	if compareVersions("a-1", "a-1") != 0 {
		t.Error("equal strings compare unequal")
	}
}

func mkfile(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindKernel(t *testing.T) {
	root := t.TempDir()
	boot, mods := filepath.Join(root, "boot"), filepath.Join(root, "modules")
	if _, _, err := findKernel(boot, mods); err == nil || !strings.Contains(err.Error(), Packages) {
		t.Fatalf("no kernel: err = %v, want a hint naming the packages", err)
	}
	mkfile(t, filepath.Join(boot, "vmlinuz-6.1.0-9-cloud-amd64"))
	mkfile(t, filepath.Join(boot, "vmlinuz-6.1.0-10-cloud-amd64"))
	mkfile(t, filepath.Join(boot, "vmlinuz-6.1.0-11-cloud-amd64")) // no modules: skipped
	mkfile(t, filepath.Join(boot, "vmlinuz-6.1.0-12-amd64"))       // not a cloud kernel
	for _, v := range []string{"6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64", "6.1.0-12-amd64"} {
		if err := os.MkdirAll(filepath.Join(mods, v), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	k, m, err := findKernel(boot, mods)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(k) != "vmlinuz-6.1.0-10-cloud-amd64" || filepath.Base(m) != "6.1.0-10-cloud-amd64" {
		t.Errorf("found %s, %s", k, m)
	}
}

func TestFindModules(t *testing.T) {
	dir := t.TempDir()
	mkfile(t, filepath.Join(dir, "kernel/drivers/md/dm-mod.ko"))
	mkfile(t, filepath.Join(dir, "kernel/drivers/md/dm-crypt.ko"))
	mkfile(t, filepath.Join(dir, "kernel/crypto/xts.ko.xz"))
	found, err := findModules(dir, []string{"dm-mod", "dm-crypt"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(found["dm-crypt"], "drivers/md/dm-crypt.ko") {
		t.Errorf("dm-crypt at %q", found["dm-crypt"])
	}
	_, err = findModules(dir, []string{"dm-mod", "xts", "ecb"})
	if err == nil || !strings.Contains(err.Error(), "xts (only compressed") || !strings.Contains(err.Error(), "ecb") {
		t.Errorf("err = %v, want xts reported compressed and ecb missing", err)
	}
}

func TestQEMUArgs(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "a,b.img")
	mkfile(t, disk)
	args, err := qemuArgs(Env{Kernel: "/boot/vmlinuz"}, Config{Disks: []string{disk}, MemoryMB: 256, Timeout: time.Second}, "/i", "/c")
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{"-accel tcg", "-m 256", "-no-reboot", "-serial file:/c", "-initrd /i",
		"file=" + filepath.Join(dir, "a,,b.img") + ",format=raw,if=virtio"} {
		if !strings.Contains(line, want) {
			t.Errorf("args %q lack %q", line, want)
		}
	}
	if _, err := qemuArgs(Env{}, Config{Disks: []string{filepath.Join(dir, "missing")}}, "/i", "/c"); err == nil {
		t.Error("missing disk image accepted")
	}
	disk2 := filepath.Join(dir, "b.img")
	mkfile(t, disk2)
	args, err = qemuArgs(Env{}, Config{Disks: []string{disk, disk2}, Serials: []string{"", "0b7c6b2e-7a5d,4c4e-8"}}, "/i", "/c")
	if err != nil {
		t.Fatal(err)
	}
	line = strings.Join(args, " ")
	for _, want := range []string{
		"-drive file=" + filepath.Join(dir, "a,,b.img") + ",format=raw,if=none,id=disk0 -device virtio-blk-pci,drive=disk0 ",
		"-drive file=" + disk2 + ",format=raw,if=none,id=disk1 -device virtio-blk-pci,drive=disk1,serial=0b7c6b2e-7a5d,,4c4e-8",
	} {
		if !strings.Contains(line+" ", want) {
			t.Errorf("args %q lack %q", line, want)
		}
	}
	if strings.Count(line, "serial=") != 1 {
		t.Errorf("args %q: a serial for the disk without one", line)
	}
	if _, err := qemuArgs(Env{}, Config{Serials: []string{"x"}}, "/i", "/c"); err == nil {
		t.Error("a serial without a disk accepted")
	}
}

func TestDiskNames(t *testing.T) {
	if got := diskNames(3); !slices.Equal(got, []string{"vda", "vdb", "vdc"}) {
		t.Errorf("diskNames(3) = %v", got)
	}
}

func TestRequireStatic(t *testing.T) {
	if err := requireStatic("/bin/sh"); err != nil && !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("requireStatic(/bin/sh) = %v", err)
	}
	notELF := filepath.Join(t.TempDir(), "script")
	mkfile(t, notELF)
	if err := requireStatic(notELF); err == nil {
		t.Error("a non-ELF file passed as a static binary")
	}
}
