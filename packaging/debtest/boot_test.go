package debtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
// cryptsetup-initramfs and the image's own cloud kernel, encrypts the
// whole root disk with kmsagent image encrypt, and boots it: the
// initramfs brings up the network (DHCP on qemu's user network), takes an
// ECS agency's temporary credential from a fake metadata service on the
// host, unwraps the data key from kms serve on the host (TLS, reached as
// 10.0.2.2) and hands it to cryptsetup; systemd then runs with / on
// /dev/mapper/root_crypt, and the daemon shows the root volume mounted,
// unlocked by the initramfs. Neither the initrd nor the unencrypted disk
// contents hold the credential's secret. A second boot with the master
// key disabled stops in the initramfs with a message naming the key.
func TestBootEncryptedRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Debian root file system with a kernel and boots it twice under emulation")
	}
	deb := theDeb(t)
	tstest.NeedTool(t, "debugfs", "e2fsprogs")
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
	kmsURL := serveTLS(t, kmsserver.New(store, kmsserver.Options{
		Clients:   []kmsserver.Client{{AccessKey: ak, SecretKey: []byte(sk), Keys: []string{kmsserver.AllKeys}}},
		ProjectID: project,
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
source = "/dev/vda"
target = "/"
auto = true
`, guestPort(kmsURL), project, guestPort(mdURL))
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
		Crypttab:   "root_crypt /dev/vda none luks,keyscript=/usr/lib/kmsagent/keyscript,initramfs\n",
		RootDevice: "/dev/mapper/root_crypt",
		DiskMB:     1536,
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

	// The image's own kernel and initrd, as its boot loader would load
	// them from /boot.
	boot := filepath.Join(dir, "boot")
	run(t, "debugfs", "-R", "rdump /boot "+dir, vm.Root)
	kernels, _ := filepath.Glob(filepath.Join(boot, "vmlinuz-*"))
	initrds, _ := filepath.Glob(filepath.Join(boot, "initrd.img-*"))
	if len(kernels) != 1 || len(initrds) != 1 {
		t.Fatalf("/boot of the image holds kernels %v and initrds %v; want one of each", kernels, initrds)
	}
	vm.Kernel, vm.Initrd = kernels[0], initrds[0]

	// No secret in what stays readable: the initrd and the plain disk.
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
		if err := exec.Command("grep", "-qaF", needle, vm.Root).Run(); err == nil {
			t.Errorf("the unencrypted root disk holds %q", needle)
		}
	}

	enc := filepath.Join(dir, "root.luks")
	run(t, bin, "--config", hostConf, "image", "encrypt", "--key-id", keyID, vm.Root, enc)
	if err := os.Remove(vm.Root); err != nil {
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
check dm-crypt 'dmsetup table root_crypt | grep -q " crypt "'
check initramfs-record '[ -f /run/kmsagent/initramfs/root_crypt.json ]'
check daemon 'systemctl is-active --quiet kmsagent.service'
data status "$(kmsagent status 2>&1)"
check status-initramfs 'kmsagent status | grep -q "root_crypt.*mounted (unlocked by initramfs)"'
check audit 'grep root_crypt /var/log/kmsagent/audit.log | grep -q initramfs'
data console "$(journalctl -b -o cat --no-pager | grep -m5 kmsagent)"
echo KMSAGENT-BOOT-MARKER root-unlocked
`)
	if st, _ := res.Data("status"); st != "" {
		t.Logf("kmsagent status in the guest: %s", st)
	}
	res.RequireSuccess(t, "root-on-dm", "dm-crypt", "initramfs-record", "daemon", "status-initramfs", "audit")
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
