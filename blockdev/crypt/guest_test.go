package crypt_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/secret"
	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/dm"
	"kmsagent/blockdev/keyring"
	"kmsagent/blockdev/vmtest"
	"kmsagent/kmsclient"
	"kmsagent/kmsclient/local"
)

// kmsagent runs the CLI and returns stdout, stderr and the exit status.
func kmsagent(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(kmsagentBin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return out.String(), errb.String(), code
}

func must(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := kmsagent(t, args...)
	if code != 0 {
		t.Fatalf("kmsagent %s: exit %d: %s%s", strings.Join(args, " "), code, out, errs)
	}
	return out + errs
}

// requireClean fails unless no device-mapper device, no kmsagent key, no
// mount under /mnt and no attached loop device is left.
func requireClean(t *testing.T, what string) {
	t.Helper()
	ctl, err := dm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if devs, err := ctl.List(); err != nil || len(devs) != 0 {
		t.Errorf("%s: device-mapper devices left: %v %v", what, devs, err)
	}
	if !vmtest.Eventually(func() bool { k, _ := keyring.Listed("kmsagent:"); return len(k) == 0 }) {
		k, _ := keyring.Listed("kmsagent:")
		t.Errorf("%s: keys left: %q", what, k)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), " /mnt/") {
		t.Errorf("%s: mounts left:\n%s", what, mi)
	}
	if !vmtest.Eventually(func() bool { return len(attachedLoops()) == 0 }) {
		t.Errorf("%s: loop devices left: %v", what, attachedLoops())
	}
}

func attachedLoops() []string {
	m, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	return m
}

func guest(t *testing.T) {
	vmtest.RequireGuest(t)
	vmtest.Report(t)
}

func TestGuestMountCycle(t *testing.T) {
	guest(t)
	mp := "/mnt/a"
	os.MkdirAll(mp, 0o755)
	out := must(t, "mount", "luks", "/dev/vda", mp, "--verbose")
	vmtest.Data("mount-vda", out)
	b, err := os.ReadFile(filepath.Join(mp, "hello.txt"))
	if err != nil || string(b) != helloText {
		t.Fatalf("hello.txt: %q %v", b, err)
	}
	ctl, err := dm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	devs, _ := ctl.List()
	if len(devs) != 1 || !strings.HasPrefix(devs[0].Name, "kmsagent-") || !strings.HasPrefix(devs[0].UUID, "CRYPT-LUKS2-") {
		t.Fatalf("devices: %+v", devs)
	}
	tab, err := ctl.Table(devs[0].Name)
	if err != nil || dm.KeyringOnly(tab) != nil {
		t.Fatalf("table %v: %v", tab, err)
	}
	vmtest.Data("table", tab[0].String())
	if !strings.Contains(tab[0].Params, ":64:logon:kmsagent:"+devs[0].Name) || !strings.Contains(tab[0].Params, "sector_size:4096") || strings.Contains(tab[0].Params, "iv_large_sectors") {
		t.Errorf("table %q: want the keyring reference and sector_size:4096, without iv_large_sectors (LUKS2 IVs count 512-byte units)", tab[0].Params)
	}
	if k, _ := keyring.Listed("kmsagent:"); len(k) != 0 {
		t.Errorf("key still in the keyring while open: %q", k)
	}
	if err := os.WriteFile(filepath.Join(mp, "vm.txt"), []byte(vmText), 0o644); err != nil {
		t.Fatal(err)
	}
	// A second open of the same volume is refused.
	if _, errs, code := kmsagent(t, "mount", "luks", "/dev/vda", "--name", "other"); code == 0 || !strings.Contains(errs, "already open") {
		t.Errorf("second open: exit %d, %s", code, errs)
	}
	st := must(t, "status")
	vmtest.Data("status", st)
	if !strings.Contains(st, devs[0].Name) || !strings.Contains(st, mp) {
		t.Errorf("status does not list the open volume %s on %s: %q", devs[0].Name, mp, st)
	}
	vmtest.Data("umount-vda", must(t, "umount", mp))
	requireClean(t, "after umount")

	must(t, "mount", "luks", "/dev/vda", mp, "-o", "noatime,nodev")
	b, err = os.ReadFile(filepath.Join(mp, "vm.txt"))
	if err != nil || string(b) != vmText {
		t.Fatalf("vm.txt after remount: %q %v", b, err)
	}
	// umount by name works too.
	devs, _ = ctl.List()
	must(t, "umount", devs[0].Name)
	requireClean(t, "after umount by name")
}

func TestGuestImageFile(t *testing.T) {
	guest(t)
	img := "/tmp/vda-copy.img"
	if out, err := exec.Command("dd", "if=/dev/vda", "of="+img, "bs=1M").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	defer os.Remove(img)
	mp := "/mnt/img"
	os.MkdirAll(mp, 0o755)
	out := must(t, "mount", "luks", img, mp, "--name", "img", "--read-only", "--verbose")
	vmtest.Data("mount-image", out)
	if b, err := os.ReadFile(filepath.Join(mp, "hello.txt")); err != nil || string(b) != helloText {
		t.Fatalf("hello.txt: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(mp, "x"), nil, 0o644); err == nil {
		t.Error("wrote to a read-only mount")
	}
	if len(attachedLoops()) != 1 {
		t.Errorf("loop devices while open: %v", attachedLoops())
	}
	must(t, "umount", mp)
	requireClean(t, "image after umount")
}

func TestGuestCryptsetupVolume(t *testing.T) {
	guest(t)
	const mp = "/mnt/ct"
	os.MkdirAll(mp, 0o755)
	out := must(t, "mount", "luks", "/dev/vdc", mp, "--name", "ct", "--discard", "--read-only")
	vmtest.Data("mount-cryptsetup", out)
	if b, err := os.ReadFile(mp + "/ct.txt"); err != nil || string(b) != ctText {
		t.Errorf("reading what cryptsetup encrypted: %q, %v", b, err)
	}
	must(t, "umount", mp)
	must(t, "mount", "luks", "/dev/vdc", "--name", "ct", "--discard")
	ctl, err := dm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	tab, err := ctl.Table("ct")
	if err != nil {
		t.Fatal(err)
	}
	vmtest.Data("table-cryptsetup", tab[0].String())
	if !strings.Contains(tab[0].Params, "allow_discards") {
		t.Errorf("no allow_discards in %q", tab[0].Params)
	}
	f, err := os.OpenFile("/dev/mapper/ct", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("data"), 0); err != nil {
		t.Error(err)
	}
	f.Close()
	must(t, "umount", "ct")
	requireClean(t, "cryptsetup volume")
}

func TestGuestFailuresLeaveNothing(t *testing.T) {
	guest(t)
	keyID, err := os.ReadFile(guestKeyID)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll("/mnt/f", 0o755)
	cases := []struct {
		name  string
		setup func()
		undo  func()
		args  []string
		want  string
	}{
		{name: "wrong binding", args: []string{"/dev/vdd", "/mnt/f"}, want: "bound to volume"},
		{name: "no file system", args: []string{"/dev/vdb", "/mnt/f"}, want: crypt.StepMount},
		{name: "wrong fs type", args: []string{"/dev/vda", "/mnt/f", "--fs-type", "vfat"}, want: crypt.StepMount},
		{name: "bad name", args: []string{"/dev/vda", "--name", "a/b"}, want: "contains '/'"},
		{name: "dash name", args: []string{"/dev/vda", "--name", "-x"}, want: "starts with '-'"},
		{name: "not luks", args: []string{"/proc/version"}, want: crypt.StepHeader},
		{
			name:  "disabled KMS key",
			setup: func() { must(t, "kms", "disable-key", string(keyID)) },
			undo:  func() { must(t, "kms", "enable-key", string(keyID)) },
			args:  []string{"/dev/vda", "/mnt/f"}, want: crypt.StepKMS,
		},
		{name: "image, no file system", args: []string{"/tmp/vdb.img", "/mnt/f"}, want: crypt.StepMount},
		{
			// Whoever owns /mnt could point the link anywhere; the
			// mount must not follow it to /mnt/f.
			name:  "symlinked mount point",
			setup: func() { os.Symlink("/mnt/f", "/mnt/link") },
			undo:  func() { os.Remove("/mnt/link") },
			args:  []string{"/dev/vda", "/mnt/link"}, want: "symbolic link",
		},
	}
	if out, err := exec.Command("dd", "if=/dev/vdb", "of=/tmp/vdb.img", "bs=1M").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	defer os.Remove("/tmp/vdb.img")
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			if c.setup != nil {
				c.setup()
			}
			if c.undo != nil {
				defer c.undo()
			}
			_, errs, code := kmsagent(t, append([]string{"mount", "luks"}, c.args...)...)
			vmtest.Data("failure-"+strings.ReplaceAll(c.name, " ", "-"), errs)
			if code == 0 {
				t.Fatalf("mount succeeded")
			}
			if !strings.Contains(errs, c.want) {
				t.Errorf("error %q does not mention %q", errs, c.want)
			}
			requireClean(t, c.name)
		})
	}
}

// TestGuestKillWorker kills the unlock worker at different moments of
// its work and checks that nothing is left, whichever step it was in.
func TestGuestKillWorker(t *testing.T) {
	guest(t)
	img := "/tmp/kill.img"
	if out, err := exec.Command("dd", "if=/dev/vda", "of="+img, "bs=1M").CombinedOutput(); err != nil {
		t.Fatalf("dd: %v %s", err, out)
	}
	defer os.Remove(img)
	os.MkdirAll("/mnt/k", 0o755)
	var outcomes []string
	for _, delay := range []time.Duration{0, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond} {
		cmd := exec.Command(kmsagentBin, "mount", "luks", img, "/mnt/k")
		var errb strings.Builder
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := waitForWorker(cmd.Process.Pid, 10*time.Second)
		if pid == 0 {
			cmd.Wait()
			outcomes = append(outcomes, fmt.Sprintf("%v: worker not seen", delay))
			requireClean(t, "no worker")
			continue
		}
		time.Sleep(delay)
		syscall.Kill(pid, syscall.SIGKILL)
		err := cmd.Wait()
		if err == nil {
			outcomes = append(outcomes, fmt.Sprintf("%v: finished first", delay))
			must(t, "umount", "/mnt/k")
		} else {
			msg := strings.TrimSpace(errb.String())
			outcomes = append(outcomes, fmt.Sprintf("%v: %s", delay, msg))
			if !strings.Contains(msg, "killed") {
				t.Errorf("delay %v: error does not say the worker was killed: %s", delay, msg)
			}
		}
		requireClean(t, fmt.Sprintf("kill after %v", delay))
	}
	vmtest.Data("kill-outcomes", strings.Join(outcomes, " | "))
}

// waitForWorker returns the pid of parent's luks-worker child.
func waitForWorker(parent int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if err != nil {
				continue
			}
			f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
			if len(f) < 2 || f[1] != fmt.Sprint(parent) {
				continue
			}
			cl, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if strings.Contains(string(cl), "luks-worker") {
				var pid int
				fmt.Sscan(e.Name(), &pid)
				return pid
			}
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", parent)); err != nil {
			return 0
		}
		time.Sleep(time.Millisecond)
	}
	return 0
}

// slowKMS adds a fixed latency to every Decrypt, like a remote KMS.
type slowKMS struct {
	kmsclient.KMS
	delay time.Duration
}

func (s slowKMS) Decrypt(ctx context.Context, keyID string, wrapped []byte, binding string) (*secret.Key, error) {
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.KMS.Decrypt(ctx, keyID, wrapped, binding)
}

// TestGuestConcurrentUnlock opens 32 volumes (partitions of /dev/vde) at once against a
// KMS with 50 ms latency and compares with opening one; it also times
// the CLI path.
func TestGuestConcurrentUnlock(t *testing.T) {
	guest(t)
	const n = benchVolumes
	ctx := context.Background()
	store, err := local.Open(guestKMSDir)
	if err != nil {
		t.Fatal(err)
	}
	imgs := make([]string, n)
	for i := range imgs {
		imgs[i] = fmt.Sprintf("/dev/vde%d", i+1)
		p := imgs[i]
		if !vmtest.Eventually(func() bool { _, err := os.Stat(p); return err == nil }) {
			t.Fatalf("%s missing", p)
		}
	}
	ctl, err := dm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	kms := slowKMS{KMS: store, delay: 50 * time.Millisecond}
	inProcess := func(ctx context.Context, req crypt.UnlockRequest) error {
		return crypt.Activate(ctx, ctl, kms, req, nil)
	}
	openAll := func(k int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, k)
		for i := 0; i < k; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs[i] = crypt.Open(ctx, ctl, imgs[i], crypt.Options{Name: fmt.Sprintf("many%02d", i)}, inProcess)
			}(i)
		}
		wg.Wait()
		d := time.Since(start)
		for i := 0; i < k; i++ {
			if errs[i] != nil {
				t.Fatalf("open %d: %v", i, errs[i])
			}
			if _, err := crypt.Close(ctx, ctl, fmt.Sprintf("many%02d", i), crypt.CloseOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	openAll(1) // warm up
	one := openAll(1)
	all := openAll(n)
	vmtest.Data("unlock-1", one.String())
	vmtest.Data("unlock-32", all.String())
	vmtest.Data("unlock-ratio", fmt.Sprintf("%.2f", float64(all)/float64(one)))
	requireClean(t, "after the library benchmark")

	// The CLI path (worker process per volume, embedded KMS, no latency).
	cliAll := func(k int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := 0; i < k; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				_, errs, code := kmsagent(t, "mount", "luks", imgs[i], "--name", fmt.Sprintf("cli%02d", i))
				if code != 0 {
					mu.Lock()
					t.Errorf("cli mount %d: %s", i, errs)
					mu.Unlock()
				}
			}(i)
		}
		wg.Wait()
		d := time.Since(start)
		for i := 0; i < k; i++ {
			kmsagent(t, "umount", fmt.Sprintf("cli%02d", i))
		}
		return d
	}
	c1 := cliAll(1)
	cn := cliAll(n)
	vmtest.Data("cli-unlock-1", c1.String())
	vmtest.Data("cli-unlock-32", cn.String())
	vmtest.Data("cli-unlock-ratio", fmt.Sprintf("%.2f", float64(cn)/float64(c1)))
	requireClean(t, "after the CLI benchmark")
}

// TestGuestSameVolumeTwice mounts one volume under two names at the same
// moment, several times: exactly one may win each race.
func TestGuestSameVolumeTwice(t *testing.T) {
	guest(t)
	for round := range 4 {
		var wg sync.WaitGroup
		codes := make([]int, 2)
		errs := make([]string, 2)
		for i := range 2 {
			wg.Go(func() {
				_, errs[i], codes[i] = kmsagent(t, "mount", "luks", "/dev/vdb", "--name", fmt.Sprintf("twice%d", i))
			})
		}
		wg.Wait()
		ok := 0
		for i := range 2 {
			if codes[i] == 0 {
				ok++
				must(t, "umount", fmt.Sprintf("twice%d", i))
			} else if !strings.Contains(errs[i], "already open") && !strings.Contains(errs[i], "being opened") {
				t.Errorf("round %d: unexpected refusal: %s", round, errs[i])
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d of 2 concurrent mounts of one volume succeeded: %q", round, ok, errs)
		}
	}
	requireClean(t, "after concurrent mounts of one volume")
}
