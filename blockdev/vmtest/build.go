package vmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BuildTest compiles the test binary of the Go package pkg (a directory
// such as "." or an import path) statically for the VM and returns its
// path. Run it in the VM with -test.run and -test.v.
func BuildTest(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(strings.TrimSuffix(pkg, "/"))+".test")
	if pkg == "." {
		out = filepath.Join(filepath.Dir(out), "pkg.test")
	}
	build(t, out, "test", "-c", "-o", out, pkg)
	return out
}

// BuildBinary compiles the main package pkg statically for the VM and
// returns its path.
func BuildBinary(t testing.TB, pkg string) string {
	t.Helper()
	name := filepath.Base(strings.TrimSuffix(pkg, "/"))
	if name == "." {
		name = "main" // the package in this directory
	}
	out := filepath.Join(t.TempDir(), name)
	build(t, out, "build", "-o", out, pkg)
	return out
}

// build runs the go tool with cgo off, so the result is static and needs
// no libc in the initramfs, and stripped of the symbol table, which makes
// the initramfs smaller without losing panic traces.
func build(t testing.TB, out string, args ...string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("vmtest: the go tool is not in PATH: %v", err)
	}
	args = append(args[:1:1], append([]string{"-ldflags=-s -w"}, args[1:]...)...)
	cmd := exec.Command(goTool, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vmtest: go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	if err := requireStatic(out); err != nil {
		t.Fatalf("vmtest: %v", err)
	}
}
