// Package debtest checks the Debian package that packaging/build-deb.sh
// builds: two builds are byte for byte identical, lintian finds no error,
// the contents are where Debian and mount(8) look for them, the systemd
// units pass systemd-analyze verify, and the generated man page and bash
// completion work.
package debtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"kmsagent/agent/tstest"
)

var (
	buildOnce sync.Once
	debDir    string
	debPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if debDir != "" {
		os.RemoveAll(debDir)
	}
	os.Exit(code)
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("git rev-parse: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// buildDeb runs build-deb.sh into a new directory and returns the .deb.
func buildDeb(t *testing.T, dist string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join(repoRoot(t), "packaging", "build-deb.sh"))
	cmd.Env = append(os.Environ(), "DIST="+dist)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build-deb.sh: %v\n%s", err, stderr.Bytes())
	}
	deb := strings.TrimSpace(string(out))
	if !filepath.IsAbs(deb) {
		deb = filepath.Join(repoRoot(t), deb)
	}
	return deb, nil
}

// theDeb builds the package once for the tests that only look at it.
func theDeb(t *testing.T) string {
	t.Helper()
	tstest.NeedTool(t, "dpkg-deb", "dpkg")
	tstest.NeedTool(t, "git", "git")
	buildOnce.Do(func() {
		debDir, buildErr = os.MkdirTemp("", "kmsagent-deb-")
		if buildErr != nil {
			return
		}
		debPath, buildErr = buildDeb(t, debDir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return debPath
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// extract unpacks the package into a new directory.
func extract(t *testing.T, deb string) string {
	t.Helper()
	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	return root
}

func TestReproducible(t *testing.T) {
	first := theDeb(t)
	second, err := buildDeb(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(first) != filepath.Base(second) {
		t.Fatalf("two builds are named %s and %s", filepath.Base(first), filepath.Base(second))
	}
	a, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("two builds differ: %s and %s; compare them with diffoscope", first, second)
	}
}

func TestLintian(t *testing.T) {
	deb := theDeb(t)
	tstest.NeedTool(t, "lintian", "lintian")
	// lintian exits non-zero on an error tag, and on its own failures.
	out, err := exec.Command("lintian", "--pedantic", "--display-info", "--fail-on", "error", deb).CombinedOutput()
	if err != nil {
		t.Errorf("lintian: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "E: "):
			t.Errorf("lintian: %s", line)
		case strings.HasPrefix(line, "W: "), strings.HasPrefix(line, "I: "), strings.HasPrefix(line, "P: "):
			t.Logf("lintian: %s", line)
		}
	}
}

func TestContents(t *testing.T) {
	deb := theDeb(t)
	listing := run(t, "dpkg-deb", "-c", deb)
	want := []struct{ mode, path string }{
		{"-rwxr-xr-x", "./usr/sbin/kmsagent"},
		{"lrwxrwxrwx", "./sbin/mount.kmsagent -> /usr/sbin/kmsagent"},
		{"-rw-r--r--", "./lib/systemd/system/kmsagent.service"},
		{"-rw-r--r--", "./lib/systemd/system/kmsagent.socket"},
		{"-rw-r--r--", "./lib/systemd/system/kmsagent-worker.socket"},
		{"-rw-r--r--", "./lib/systemd/system/kmsagent-worker@.service"},
		{"-rw-r--r--", "./lib/systemd/system/kmsagent-kms.service"},
		{"-rw-r--r--", "./lib/systemd/system/kmsagent-kms.socket"},
		{"-rw-r--r--", "./usr/share/doc/kmsagent/agent.toml.example"},
		{"-rw-r--r--", "./usr/share/doc/kmsagent/copyright"},
		{"-rw-r--r--", "./usr/share/doc/kmsagent/changelog.Debian.gz"},
		{"-rw-r--r--", "./usr/share/man/man8/kmsagent.8.gz"},
		{"lrwxrwxrwx", "./usr/share/man/man8/mount.kmsagent.8.gz -> kmsagent.8.gz"},
		{"-rw-r--r--", "./usr/share/bash-completion/completions/kmsagent"},
		{"-rwxr-xr-x", "./usr/share/initramfs-tools/hooks/kmsagent"},
		{"-rwxr-xr-x", "./usr/lib/kmsagent/keyscript"},
	}
	for _, w := range want {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(w.mode) + ` root/root +\d+ [-0-9]+ [0-9:]+ ` + regexp.QuoteMeta(w.path) + `$`)
		if !re.MatchString(listing) {
			t.Errorf("%s %s root/root is missing from the package:\n%s", w.mode, w.path, listing)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		if !strings.Contains(line, " root/root ") {
			t.Errorf("not owned by root: %s", line)
		}
	}

	version := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version"))
	if filepath.Base(deb) != "kmsagent_"+version+"_amd64.deb" {
		t.Errorf("package %s has version %s", filepath.Base(deb), version)
	}
	root := extract(t, deb)
	if got := run(t, filepath.Join(root, "usr/sbin/kmsagent"), "version"); got != "kmsagent "+version+"\n" {
		t.Errorf("kmsagent version prints %q; the package is %s", got, version)
	}
	file := run(t, "file", "-b", filepath.Join(root, "usr/sbin/kmsagent"))
	if !strings.Contains(file, "pie executable") || !strings.Contains(file, "stripped") || strings.Contains(file, "not stripped") {
		t.Errorf("binary: %s; want a stripped PIE", file)
	}
	ctrl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctrl)
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		run(t, "sh", "-n", filepath.Join(ctrl, script))
	}
	for _, script := range []string{"usr/share/initramfs-tools/hooks/kmsagent", "usr/lib/kmsagent/keyscript"} {
		run(t, "sh", "-n", filepath.Join(root, script))
	}
	if triggers, err := os.ReadFile(filepath.Join(ctrl, "triggers")); err != nil || !strings.Contains(string(triggers), "activate-noawait update-initramfs") {
		t.Errorf("the package does not trigger update-initramfs: %q, %v", triggers, err)
	}
	// Purge removes the daemon's state, never the KMS key store.
	postrm, err := os.ReadFile(filepath.Join(ctrl, "postrm"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(postrm), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "rm ") && (strings.Contains(line, "/var/lib/kmsagent/kms") || strings.Contains(line, "/var/lib/kmsagent ")) {
			t.Errorf("postrm removes the key store: %s", line)
		}
	}
	if !strings.Contains(string(postrm), "rm -rf /var/lib/kmsagent/agent") {
		t.Error("postrm does not remove /var/lib/kmsagent/agent on purge")
	}
}

// TestUnits runs systemd-analyze verify on every unit of the package, in
// the package's tree with the host's own units next to it, and records
// the exposure score of the daemon's sandbox.
func TestUnits(t *testing.T) {
	deb := theDeb(t)
	tstest.NeedTool(t, "systemd-analyze", "systemd")
	root := extract(t, deb)
	// The units name /bin/kill and the targets of the host.
	if err := os.MkdirAll(filepath.Join(root, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "cp", "-a", "/usr/lib/systemd/system", filepath.Join(root, "usr/lib/systemd/"))
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "cp", "/bin/kill", filepath.Join(root, "bin/kill"))
	units, err := filepath.Glob(filepath.Join(root, "lib/systemd/system/*"))
	if err != nil || len(units) != 6 {
		t.Fatalf("units %v, %v; want 6", units, err)
	}
	for _, unit := range units {
		out, err := exec.Command("systemd-analyze", "verify", "--man=no", "--root="+root, unit).CombinedOutput()
		// verify only warns about unknown settings; they are errors here.
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(unit), err, out)
		}
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--root="+root, filepath.Join(root, "lib/systemd/system/kmsagent.service")).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for kmsagent.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security kmsagent.service: exposure %.1f", score)
	// The README records 1.7, and the issue asks for at most 4.0.
	// More means a setting was lost.
	if score > 1.7 {
		t.Errorf("exposure of kmsagent.service is %.1f, was 1.7:\n%s", score, out)
	}
}

func TestManPage(t *testing.T) {
	deb := theDeb(t)
	tstest.NeedTool(t, "man", "man-db")
	root := extract(t, deb)
	cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", filepath.Join(root, "usr/share/man/man8/kmsagent.8.gz"))
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "LC_ALL=C.UTF-8")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("man: %v\n%s", err, stderr.Bytes())
	}
	page := stdout.String()
	// Every command, the mount helper and the exit statuses.
	for _, want := range []string{"kmsagent mount fuse", "kmsagent mount luks", "kmsagent kms serve", "kmsagent image encrypt",
		"kmsagent export-key", "--key-id", "MOUNT HELPER", "mount.kmsagent", "EXIT STATUS", "/var/lib/kmsagent/kms"} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
}

func TestBashCompletion(t *testing.T) {
	deb := theDeb(t)
	tstest.NeedTool(t, "bash", "bash")
	root := extract(t, deb)
	script := `source "$1"
complete_line() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _kmsagent; echo "${COMPREPLY[*]}"; }
complete_line kmsagent mou
complete_line kmsagent --config /etc/x.toml mount fuse --f
complete_line kmsagent kms cre
complete_line kmsagent image ""
`
	out := run(t, "bash", "-c", script, "bash", filepath.Join(root, "usr/share/bash-completion/completions/kmsagent"))
	want := "mount\n--foreground\ncreate-key\nencrypt decrypt inspect rewrap\n"
	if out != want {
		t.Fatalf("completions:\n%s\nwant:\n%s", out, want)
	}
}
