package vmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// lddLib matches the libraries in ldd's output: "libc.so.6 =>
// /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the loader's
// "/lib64/ld-linux-x86-64.so.2 (0x...)".
var lddLib = regexp.MustCompile(`(?m)^\s*(?:\S+ => )?(/\S+) \(0x`)

// AddHostProgram copies a dynamically linked program of the host into
// the VM at the same path, with the shared libraries ldd lists for it,
// so it runs there as on the host. It skips the test when the program
// is missing (fails under CI=true); pkg names the Debian package for the
// message.
func AddHostProgram(t testing.TB, cfg *Config, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		missing(t, path+" (package "+pkg+")")
	}
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		t.Fatalf("vmtest: ldd %s: %v", path, err)
	}
	if cfg.Binaries == nil {
		cfg.Binaries = map[string]string{}
	}
	cfg.Binaries[path] = path
	for _, m := range lddLib.FindAllStringSubmatch(string(out), -1) {
		cfg.Binaries[m[1]] = m[1]
	}
}

// HostRulesDir is where Debian's packages put udev rules.
const HostRulesDir = "/lib/udev/rules.d"

// AddUdev adds Debian's udevd (udevadm, which is also systemd-udevd,
// and its libraries) and the named rules files of the host's
// HostRulesDir to cfg, and returns the shell lines that start udevd and
// replay the block devices' add events; the test's script begins with
// them, so udev has settled before the test runs. udevadm is on the
// script's PATH. Programs the rules
// call must be added with AddHostProgram. It skips the test when udev or
// a rules file is missing (fails under CI=true).
func AddUdev(t testing.TB, cfg *Config, rules ...string) string {
	t.Helper()
	udevadm, err := exec.LookPath("udevadm")
	if err != nil {
		missing(t, "udevadm (package udev)")
	}
	AddHostProgram(t, cfg, udevadm, "udev")
	if cfg.Files == nil {
		cfg.Files = map[string][]byte{}
	}
	for _, r := range rules {
		b, err := os.ReadFile(filepath.Join(HostRulesDir, r))
		if err != nil {
			missing(t, "udev rules "+r+": "+err.Error())
		}
		cfg.Files[filepath.Join(HostRulesDir, r)] = b
	}
	return strings.Join([]string{
		"mkdir -p /run/udev /etc/udev",
		"[ -e /bin/udevadm ] || ln -s " + udevadm + " /bin/udevadm",
		"ln -sf " + udevadm + " /bin/systemd-udevd",
		`systemd-udevd --daemon || echo "` + resultPrefix + ` udevd FAIL"`,
		"udevadm trigger --action=add --subsystem-match=block",
		"udevadm settle --timeout=30",
	}, "\n") + "\n"
}

// DMCookies returns the lines of /proc/sysvipc/sem for device-mapper's
// udev cookies (keys 0x0d4dxxxx), to check in the VM that none leaked.
func DMCookies() ([]string, error) {
	b, err := os.ReadFile("/proc/sysvipc/sem")
	if err != nil {
		return nil, err
	}
	var left []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if key, err := strconv.ParseInt(f[0], 10, 64); err == nil && uint32(key)>>16 == 0x0D4D {
			left = append(left, strings.Join(f, " "))
		}
	}
	return left, nil
}

// missing skips the test for a missing prerequisite, or fails it under
// CI=true, as Require does.
func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("vmtest: %s is missing (CI=true, so this fails rather than skips)", what)
	}
	t.Skipf("vmtest: %s is missing", what)
}
