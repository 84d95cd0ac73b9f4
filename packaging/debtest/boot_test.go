package debtest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kmsagent/agent/tstest"
	"kmsagent/blockdev/vmtest"
	"kmsagent/blockdev/vmtest/debvm"
	"kmsagent/kmsclient/kmsserver"
)

// TestBootEncryptedRoot builds a Debian root file system with the .deb,
// cryptsetup-initramfs and the image's own cloud kernel, packs it as a
// cloud image does, a GPT disk with /boot (plain ext4) on partition 1
// and the root file system last on partition 2, encrypts partition 2
// with kmsagent image encrypt --partition 2 and boots it: the initramfs
// brings up the network (DHCP on qemu's user network), takes an ECS
// agency's temporary credential from a fake metadata service on the
// host, unwraps the data key from kms serve on the host (TLS, reached as
// 10.0.2.2) and hands it to cryptsetup for the partition crypttab names
// by PARTUUID; systemd then runs with / on /dev/mapper/root_crypt over
// /dev/vda2 and /boot mounted from /dev/vda1 by its file system UUID,
// and the daemon shows the root volume mounted, unlocked by the
// initramfs. Neither the initrd nor the plain parts of the disk hold the
// credential's secret. A second boot with the master key disabled stops
// in the initramfs with a message naming the key. A third, with a
// recovery keyslot added and the KMS down for the first 10 s, shows the
// recovery prompt while the keyscript keeps trying, withdraws it when the
// KMS answers and boots.
//
// The disk has no boot loader: qemu boots the kernel and initrd read
// from partition 1 of the encrypted disk, which is what GRUB would load
// from the plain /boot; installing GRUB adds nothing kmsagent does.
func TestBootEncryptedRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Debian root file system with a kernel and boots it twice under emulation")
	}
	deb := theDeb(t)
	tstest.NeedTool(t, "debugfs", "e2fsprogs")
	tstest.NeedTool(t, "sfdisk", "fdisk")
	tstest.NeedTool(t, "unmkinitramfs", "initramfs-tools-core")
	bin := tstest.Kmsagent(t)
	dir := t.TempDir()

	// The KMS on the host: kms serve's handler over the embedded store,
	// one client whose secret only the metadata service hands out.
	store, keyID := tstest.LocalKMS(t, "root")
	skBytes := make([]byte, 16)
	rand.Read(skBytes)
	sk := "bootsk" + hex.EncodeToString(skBytes)
	const ak, project = "BOOTHOST1", "p1"
	caPEM, serverCert := testCA(t, net.ParseIP("127.0.0.1"), net.ParseIP("10.0.2.2"))
	kmsHandler := kmsserver.New(store, kmsserver.Options{
		Clients:   []kmsserver.Client{{AccessKey: ak, SecretKey: []byte(sk), Keys: []string{kmsserver.AllKeys}}},
		ProjectID: project,
	})
	// Once downFor is set, the KMS answers 503 (unreachable, to the
	// client) for that long from the next request on.
	var downFor, downSince atomic.Int64
	kmsURL := serveTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := downFor.Load(); d > 0 {
			now := time.Now().UnixNano()
			downSince.CompareAndSwap(0, now)
			if now-downSince.Load() < d {
				http.Error(w, "down for the test", http.StatusServiceUnavailable)
				return
			}
		}
		kmsHandler.ServeHTTP(w, r)
	}), serverCert)
	var metadataCalls atomic.Int32
	mdURL := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/openstack/latest/securitykey" {
			http.NotFound(w, r) // no session token step: carry on without one
			return
		}
		metadataCalls.Add(1)
		fmt.Fprintf(w, `{"credential":{"access":%q,"secret":%q,"securitytoken":"boot-session-token","expires_at":%q}}`,
			ak, sk, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	guestPort := func(u string) string { return u[strings.LastIndex(u, ":")+1:] }

	// The host encrypts with a static credential, as an image build would.
	caFile := filepath.Join(dir, "ca.pem")
	skFile := filepath.Join(dir, "host.sk")
	writeFile(t, caFile, caPEM, 0o644)
	writeFile(t, skFile, []byte(sk), 0o600)
	hostConf := filepath.Join(dir, "host.toml")
	writeFile(t, hostConf, []byte(fmt.Sprintf(`[kms]
provider = "huaweicloud"
[kms.huaweicloud]
endpoint = %q
project_id = %q
access_key = %q
secret_key_file = %q
ca_file = %q
`, kmsURL, project, ak, skFile, caFile)), 0o600)

	// The disk's names, chosen before the tree is packed so that
	// crypttab and fstab can name them: the root partition by its
	// PARTUUID (the LUKS2 header's UUID exists only after image encrypt),
	// /boot by its file system's UUID.
	bootUUID, rootPartUUID := newUUID(), newUUID()
	guestConf := fmt.Sprintf(`[kms]
provider = "huaweicloud"
[kms.huaweicloud]
endpoint = "https://10.0.2.2:%s"
project_id = %q
credentials = "metadata"
metadata_endpoint = "http://10.0.2.2:%s"
ca_file = "/etc/kmsagent/kms-ca.pem"

[[volume]]
name = "root_crypt"
type = "luks"
source = "/dev/disk/by-partuuid/%s"
target = "/"
auto = true
`, guestPort(kmsURL), project, guestPort(mdURL), rootPartUUID)
	debData, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	vm := debvm.New(t, debvm.Config{
		Packages: []string{"linux-image-cloud-amd64", "cryptsetup-initramfs", "busybox", "procps"},
		Files: map[string][]byte{
			"/etc/kmsagent/agent.toml": []byte(guestConf),
			"/etc/kmsagent/kms-ca.pem": caPEM,
			"/var/tmp/kmsagent.deb":    debData,
		},
		Crypttab:   "root_crypt PARTUUID=" + rootPartUUID + " none luks,keyscript=/usr/lib/kmsagent/keyscript,initramfs\n",
		RootDevice: "/dev/mapper/root_crypt",
		Fstab:      "UUID=" + bootUUID + " /boot ext4 rw,nodev,nosuid 0 2\n",
		Pack:       packGPT(bootUUID, rootPartUUID),
		// The chroot cannot detect the cipher and disk modules; the .deb's
		// trigger and the explicit update build the initramfs with them.
		Setup: `
mount -t proc proc /proc
trap 'umount /proc' EXIT
printf '%s\n' dm-crypt xts ecb aes_generic aesni_intel virtio_blk virtio_pci virtio_net ext4 >>/etc/initramfs-tools/modules
dpkg -i /var/tmp/kmsagent.deb
rm /var/tmp/kmsagent.deb
update-initramfs -u -k all
`,
	})

	plain := vm.Root
	enc := filepath.Join(dir, "disk.img")
	out := run(t, bin, "--config", hostConf, "image", "encrypt", "--key-id", keyID, "--partition", "2", plain, enc)
	t.Logf("image encrypt --partition 2: %s", strings.TrimSpace(out))
	if out := run(t, "sfdisk", "--verify", enc); !strings.Contains(out, "No errors detected") {
		t.Fatalf("sfdisk --verify of the encrypted disk:\n%s", out)
	}
	if out := run(t, tstest.NeedTool(t, "sgdisk", "gdisk"), "-v", enc); !strings.Contains(out, "No problems found") {
		t.Fatalf("sgdisk -v of the encrypted disk:\n%s", out)
	}
	if got := strings.TrimSpace(run(t, "sfdisk", "--part-uuid", enc, "2")); !strings.EqualFold(got, rootPartUUID) {
		t.Fatalf("partition 2's PARTUUID is %s after image encrypt, crypttab names %s", got, rootPartUUID)
	}
	if desc := run(t, "blkid", "-p", "-o", "export", "--offset", fmt.Sprint(partStart(t, enc, 2)), enc); !strings.Contains(desc, "TYPE=crypto_LUKS") {
		t.Fatalf("partition 2 of the encrypted disk is not LUKS:\n%s", desc)
	}

	// The image's own kernel and initrd, as a boot loader would load them
	// from the plain /boot partition.
	boot := filepath.Join(dir, "boot")
	bootFS := filepath.Join(dir, "boot.ext4")
	copyPart(t, enc, 1, bootFS)
	if desc := run(t, "blkid", "-o", "export", bootFS); !strings.Contains(desc, "UUID="+bootUUID) {
		t.Fatalf("partition 1 is not the /boot file system %s:\n%s", bootUUID, desc)
	}
	if err := os.Mkdir(boot, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "debugfs", "-R", "rdump / "+boot, bootFS)
	kernels, _ := filepath.Glob(filepath.Join(boot, "vmlinuz-*"))
	initrds, _ := filepath.Glob(filepath.Join(boot, "initrd.img-*"))
	if len(kernels) != 1 || len(initrds) != 1 {
		t.Fatalf("the /boot partition holds kernels %v and initrds %v; want one of each", kernels, initrds)
	}
	vm.Kernel, vm.Initrd = kernels[0], initrds[0]

	// No secret in what stays readable: the initrd, the disk before
	// encryption and the plain partition after.
	initrdTree := filepath.Join(dir, "initrd")
	run(t, "unmkinitramfs", vm.Initrd, initrdTree)
	conf := findFile(t, initrdTree, "etc/kmsagent/agent.toml")
	if conf == "" || findFile(t, initrdTree, "usr/sbin/kmsagent") == "" || findFile(t, initrdTree, "usr/lib/kmsagent/keyscript") == "" {
		t.Fatalf("the initrd lacks kmsagent, its keyscript or its configuration:\n%s", run(t, "find", initrdTree, "-path", "*kmsagent*"))
	}
	if text, _ := os.ReadFile(conf); bytes.Contains(text, []byte("volume")) || !bytes.Contains(text, []byte(`credentials = 'metadata'`)) {
		t.Errorf("initramfs configuration:\n%s", text)
	}
	for _, needle := range []string{sk, ak} {
		if out, err := exec.Command("grep", "-rlaF", needle, initrdTree).Output(); err == nil {
			t.Errorf("the initrd holds %q in %s", needle, out)
		}
		for _, img := range []string{plain, bootFS} {
			if err := exec.Command("grep", "-qaF", needle, img).Run(); err == nil {
				t.Errorf("%s holds %q", filepath.Base(img), needle)
			}
		}
	}
	if err := os.Remove(plain); err != nil {
		t.Fatal(err)
	}
	vm.Root = enc
	vm.Args = []string{"-nic", "user,model=virtio-net-pci"}
	// Under software emulation on a busy 2-core host one boot has taken
	// seven minutes.
	vm.Timeout = 15 * time.Minute
	vm.ForcePoweroff = true

	res := vm.Boot(t, `
check root-on-dm '[ "$(findmnt -no SOURCE /)" = /dev/mapper/root_crypt ]'
check root-on-vda2 'cryptsetup status root_crypt | grep -Eq "device: +/dev/vda2$"'
check boot-plain '[ "$(findmnt -no SOURCE /boot)" = /dev/vda1 ] && [ "$(findmnt -no FSTYPE /boot)" = ext4 ]'
check boot-kernel 'ls /boot/vmlinuz-* /boot/initrd.img-*'
data mounts "$(findmnt -no TARGET,SOURCE,FSTYPE /), $(findmnt -no TARGET,SOURCE,FSTYPE /boot)"
check dm-crypt 'dmsetup table root_crypt | grep -q " crypt "'
check initramfs-record '[ -f /run/kmsagent/initramfs/root_crypt.json ]'
check daemon 'systemctl is-active --quiet kmsagent.service'
data status "$(kmsagent status 2>&1)"
check status-initramfs 'kmsagent status | grep -q "root_crypt.*mounted (unlocked by initramfs)"'
check audit 'grep root_crypt /var/log/kmsagent/audit.log | grep -q initramfs'
data console "$(journalctl -b -o cat --no-pager | grep -m5 kmsagent)"
echo KMSAGENT-BOOT-MARKER root-unlocked
`)
	if m, _ := res.Data("mounts"); m != "" {
		t.Logf("mounts in the guest: %s", m)
	}
	if st, _ := res.Data("status"); st != "" {
		t.Logf("kmsagent status in the guest: %s", st)
	}
	res.RequireSuccess(t, "root-on-dm", "root-on-vda2", "boot-plain", "boot-kernel", "dm-crypt", "initramfs-record", "daemon", "status-initramfs", "audit")
	if metadataCalls.Load() == 0 {
		t.Error("the initramfs never asked the metadata service")
	}

	// The master key disabled: the initramfs stops, naming the key.
	if err := store.DisableKey(t.Context(), keyID); err != nil {
		t.Fatal(err)
	}
	env, err := vmtest.FindEnv()
	if err != nil {
		t.Fatal(err)
	}
	m := vmtest.Machine{
		QEMU: env.QEMU, Kernel: vm.Kernel, Initrd: vm.Initrd,
		Cmdline:  "root=/dev/mapper/root_crypt rw console=ttyS0 panic=-1 no_timer_check rootdelay=5",
		Disks:    []string{vm.Root},
		MemoryMB: debvm.DefaultMemoryMB, CPUs: debvm.DefaultCPUs, Timeout: 10 * time.Minute,
		Args: vm.Args,
	}
	failed, err := m.Boot(t.Context(), filepath.Join(dir, "disabled.log"))
	if err == nil {
		t.Fatal("the boot went on with the master key disabled")
	}
	want := "kmsagent: root_crypt: the KMS refused key " + keyID
	if failed == nil || !strings.Contains(failed.Serial, want) || !strings.Contains(failed.Serial, "disabled") {
		serial := ""
		if failed != nil {
			serial = failed.Serial[max(0, len(failed.Serial)-6000):]
		}
		t.Fatalf("no %q on the console of the boot with the key disabled (%v):\n%s", want, err, serial)
	}

	// A recovery keyslot, the key enabled again and the KMS down for the
	// initramfs's first rounds: the keyscript shows the recovery prompt
	// (the real askpass, on the console) while it keeps trying, and
	// withdraws it when the KMS answers; the boot goes on by itself.
	if err := store.EnableKey(t.Context(), keyID); err != nil {
		t.Fatal(err)
	}
	addRecoveryKeyslot(t, bin, hostConf, enc, 2, dir)
	downFor.Store(int64(10 * time.Second))
	res = vm.Boot(t, `
check root-on-dm '[ "$(findmnt -no SOURCE /)" = /dev/mapper/root_crypt ]'
check status-initramfs 'kmsagent status | grep -q "root_crypt.*mounted (unlocked by initramfs)"'
echo KMSAGENT-BOOT-MARKER root-unlocked-after-outage
`)
	res.RequireSuccess(t, "root-on-dm", "status-initramfs")
	for _, line := range strings.Split(res.Serial, "\n") {
		if strings.Contains(line, "root_crypt") && (strings.Contains(line, "KMS") || strings.Contains(line, "ecovery")) {
			t.Logf("console: %s", strings.TrimSpace(line))
		}
	}
	for _, want := range []string{
		"kmsagent: root_crypt: cannot reach the KMS for key " + keyID,
		"The KMS cannot be reached; still trying. Recovery passphrase for root_crypt",
		"kmsagent: root_crypt: the KMS answered; recovery prompt withdrawn",
	} {
		if !strings.Contains(res.Serial, want) {
			t.Errorf("no %q on the console of the boot with the KMS down at first", want)
		}
	}
}

// addRecoveryKeyslot adds a passphrase keyslot to the LUKS2 volume on
// partition part of disk, as the README tells an admin to for an image:
// export-key through the KMS, then cryptsetup luksAddKey with that volume
// key, through a loop device at the partition's offset.
func addRecoveryKeyslot(t *testing.T, bin, conf, disk string, part int, dir string) {
	t.Helper()
	loop := strings.TrimSpace(run(t, "losetup", "--find", "--show", "--offset", fmt.Sprint(partStart(t, disk, part)), disk))
	defer run(t, "losetup", "-d", loop)
	out, err := exec.Command(bin, "--config", conf, "export-key", loop).Output()
	if err != nil {
		t.Fatalf("export-key %s: %v", loop, err)
	}
	vk, err := hex.DecodeString(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("export-key printed no hex key: %v", err)
	}
	vkFile, passFile := filepath.Join(dir, "vk"), filepath.Join(dir, "recovery")
	writeFile(t, vkFile, vk, 0o600)
	writeFile(t, passFile, []byte("recovery words for the boot test"), 0o600)
	defer os.Remove(vkFile)
	run(t, "cryptsetup", "luksAddKey", "--batch-mode", "--volume-key-file", vkFile,
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", loop, passFile)
}

// Sizes of the partitions of the boot test's disk.
const (
	bootMiB = 256
	rootMiB = 1536
)

// packGPT packs a root file system tree as a cloud image: a GPT disk with
// the tree's /boot as an ext4 file system (UUID bootUUID) on partition 1
// and the rest of the tree, with an empty /boot to mount it on, on
// partition 2 (PARTUUID rootPartUUID), last on the disk so that image
// encrypt grows it in place.
func packGPT(bootUUID, rootPartUUID string) func(ctx context.Context, tree, dst string) error {
	return func(ctx context.Context, tree, dst string) error {
		dir := filepath.Dir(dst)
		bootFS, rootFS := filepath.Join(dir, "boot.ext4"), filepath.Join(dir, "root.ext4")
		defer os.Remove(bootFS)
		defer os.Remove(rootFS)
		if err := mkfsImage(ctx, bootFS, bootMiB, filepath.Join(tree, "boot"), "-L", "boot", "-U", bootUUID); err != nil {
			return err
		}
		entries, err := os.ReadDir(filepath.Join(tree, "boot"))
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(tree, "boot", e.Name())); err != nil {
				return err
			}
		}
		if err := mkfsImage(ctx, rootFS, rootMiB, tree, "-L", "root"); err != nil {
			return err
		}
		// 1 MiB before the first partition (the GPT and alignment), 1 MiB
		// after the last for the backup GPT.
		if err := os.WriteFile(dst, nil, 0o600); err != nil {
			return err
		}
		if err := os.Truncate(dst, (1+bootMiB+rootMiB+1)<<20); err != nil {
			return err
		}
		const mib = 1 << 20 / 512
		script := fmt.Sprintf(`label: gpt
start=%d, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=%s, name=boot
start=%d, size=%d, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=%s, name=root
`, mib, bootMiB*mib, newUUID(), (1+bootMiB)*mib, rootMiB*mib, rootPartUUID)
		cmd := exec.CommandContext(ctx, "sfdisk", "-q", dst)
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("sfdisk: %v: %s", err, out)
		}
		for _, p := range []struct {
			fs    string
			atMiB int
		}{{bootFS, 1}, {rootFS, 1 + bootMiB}} {
			out, err := exec.CommandContext(ctx, "dd", "if="+p.fs, "of="+dst, "bs=1M", fmt.Sprintf("seek=%d", p.atMiB), "conv=notrunc,sparse", "status=none").CombinedOutput()
			if err != nil {
				return fmt.Errorf("dd %s: %v: %s", p.fs, err, out)
			}
		}
		return nil
	}
}

// mkfsImage makes an ext4 file system of sizeMiB in a new file at dst
// with the contents of the directory from.
func mkfsImage(ctx context.Context, dst string, sizeMiB int, from string, args ...string) error {
	if err := os.WriteFile(dst, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(dst, int64(sizeMiB)<<20); err != nil {
		return err
	}
	args = append([]string{"-q", "-F", "-b", "4096", "-d", from}, append(args, dst)...)
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %v: %s", dst, err, out)
	}
	return nil
}

// partStart returns the byte offset of partition n of a disk image.
func partStart(t *testing.T, disk string, n int) int64 {
	start, _ := partRange(t, disk, n)
	return start
}

// partRange returns the byte offset and size of partition n of a disk
// image, from sfdisk --json.
func partRange(t *testing.T, disk string, n int) (int64, int64) {
	t.Helper()
	var table struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Node        string
				Start, Size int64
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", disk)), &table); err != nil {
		t.Fatalf("sfdisk --json %s: %v", disk, err)
	}
	ss := cmp.Or(table.PartitionTable.SectorSize, 512)
	for _, p := range table.PartitionTable.Partitions {
		if p.Node == disk+strconv.Itoa(n) {
			return p.Start * ss, p.Size * ss
		}
	}
	t.Fatalf("%s has no partition %d", disk, n)
	return 0, 0
}

// copyPart copies partition n of a disk image to the file dst.
func copyPart(t *testing.T, disk string, n int, dst string) {
	t.Helper()
	start, size := partRange(t, disk, n)
	in, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(in, start, size)); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// testCA makes a CA and a server certificate for ips, and returns the
// CA's PEM and the server's TLS certificate.
func testCA(t *testing.T, ips ...net.IP) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kmsagent boot test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kms"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serve serves h on a loopback port, which the guest reaches as
// 10.0.2.2, and returns its URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

func serveTLS(t *testing.T, h http.Handler, cert tls.Certificate) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return "https://" + ln.Addr().String()
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// findFile returns the path of rel under an unpacked initrd (unmkinitramfs
// puts the main archive in main/ when there is an early one), or "".
func findFile(t *testing.T, tree, rel string) string {
	t.Helper()
	for _, p := range []string{filepath.Join(tree, rel), filepath.Join(tree, "main", rel)} {
		if _, err := os.Lstat(p); err == nil {
			return p
		}
	}
	return ""
}
