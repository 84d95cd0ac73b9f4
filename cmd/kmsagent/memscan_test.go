package main

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/base64"
	be "encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kmsagent/agent/tstest"
)

// TestShareKeysWiped checks "keys are zeroed on unmount" as a test: while a
// share is mounted its worker holds the content key's AES round keys
// (positive control) but not the master key, which it wipes once the
// ciphers are built; after unmount the worker is gone and no process of
// ours holds either.
func TestShareKeysWiped(t *testing.T) {
	h := newHost(t)
	h.must("kms", "create-key", "--alias", "k")
	cipher, plain := filepath.Join(h.dir, "c"), filepath.Join(h.dir, "p")
	os.Mkdir(cipher, 0o700)
	os.Mkdir(plain, 0o755)
	h.must("format", "fuse", cipher, "--key-id", "k")
	masterHex, _, code := h.kmsagent(nil, "export-key", cipher)
	if code != 0 {
		t.Fatal("export-key failed")
	}
	master, err := hex.DecodeString(strings.TrimSpace(masterHex))
	if err != nil {
		t.Fatal(err)
	}
	contentKey, err := hkdf.Key(sha256.New, master, nil, "AES-GCM file content encryption", 32)
	if err != nil {
		t.Fatal(err)
	}
	secrets := keyForms(master, "master key")
	roundKeys := aesRoundKeys(t, contentKey)

	h.mount(cipher, plain)
	os.WriteFile(filepath.Join(plain, "f"), []byte("data"), 0o600) // the key is used
	pid := workerPID(t, cipher)
	mem := readProcessMemory(t, pid)
	found := 0
	for _, rk := range roundKeys {
		if mem.find(rk) != "" {
			found++
		}
	}
	if found == 0 {
		t.Fatal("positive control failed: no round key of the content key in the mounted worker's memory; the scan cannot be trusted")
	}
	for name, form := range secrets {
		if at := mem.find(form); at != "" {
			t.Errorf("the mounted worker still holds the %s, in %s", name, at)
		}
	}

	h.must("umount", plain)
	if !tstest.WaitExit(t, pid, 10*time.Second) {
		t.Fatalf("worker %d still running after umount", pid)
	}
	for p, mem := range otherProcessesMemory(t, ourProcesses(t, h.dir)) {
		for name, form := range secrets {
			if at := mem.find(form); at != "" {
				t.Errorf("process %d holds the %s after unmount, in %s", p, name, at)
			}
		}
		for _, rk := range roundKeys {
			if at := mem.find(rk); at != "" {
				t.Errorf("process %d holds a content key round key after unmount, in %s", p, at)
				break
			}
		}
	}
}

// keyForms are the encodings a key could leak in: raw, and both halves,
// hex and base64.
func keyForms(key []byte, name string) map[string][]byte {
	return map[string][]byte{
		name:                 key,
		name + " (1st half)": key[:len(key)/2],
		name + " (2nd half)": key[len(key)/2:],
		name + " (hex)":      []byte(hex.EncodeToString(key)),
		name + " (base64)":   []byte(base64.StdEncoding.EncodeToString(key)),
	}
}

// aesRoundKeys expands an AES-256 key (FIPS 197) and returns round keys
// 2..14, each 16 bytes, in the byte order AES-NI code keeps them.
func aesRoundKeys(t *testing.T, key []byte) [][]byte {
	if _, err := aes.NewCipher(key); err != nil || len(key) != 32 {
		t.Fatalf("not an AES-256 key: %v", err)
	}
	const nk, rounds = 8, 14
	w := make([]uint32, 4*(rounds+1))
	for i := range nk {
		w[i] = be.BigEndian.Uint32(key[4*i:])
	}
	rcon := uint32(1)
	for i := nk; i < len(w); i++ {
		tmp := w[i-1]
		switch i % nk {
		case 0:
			tmp = subWord(tmp<<8|tmp>>24) ^ rcon<<24
			rcon = xtime(rcon)
		case 4:
			tmp = subWord(tmp)
		}
		w[i] = w[i-nk] ^ tmp
	}
	var out [][]byte
	for r := 2; r <= rounds; r++ {
		rk := make([]byte, 16)
		for j := range 4 {
			be.BigEndian.PutUint32(rk[4*j:], w[4*r+j])
		}
		out = append(out, rk)
	}
	return out
}

func xtime(b uint32) uint32 {
	b <<= 1
	if b&0x100 != 0 {
		b ^= 0x11b
	}
	return b
}

// subWord applies the AES S-box, computed from its definition (inverse
// in GF(2^8), then the affine map) to keep the test self-contained.
func subWord(w uint32) uint32 {
	var out uint32
	for i := range 4 {
		b := byte(w >> (8 * i))
		out |= uint32(sbox(b)) << (8 * i)
	}
	return out
}

func sbox(b byte) byte {
	inv := byte(0)
	if b != 0 {
		for c := 1; c < 256; c++ {
			if gmul(b, byte(c)) == 1 {
				inv = byte(c)
				break
			}
		}
	}
	s := inv
	for i := 1; i <= 4; i++ {
		s ^= inv<<i | inv>>(8-i)
	}
	return s ^ 0x63
}

func gmul(a, b byte) byte {
	var p byte
	for b != 0 {
		if b&1 != 0 {
			p ^= a
		}
		hi := a & 0x80
		a <<= 1
		if hi != 0 {
			a ^= 0x1b
		}
		b >>= 1
	}
	return p
}

// workerPID finds the worker serving cipher from its command line.
func workerPID(t *testing.T, cipher string) int {
	t.Helper()
	for _, pid := range ourProcesses(t, cipher) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(cmdline, []byte("\x00"+fuseWorkerCommand+"\x00")) {
			return pid
		}
	}
	t.Fatalf("no worker for %s", cipher)
	return 0
}

// ourProcesses lists the kmsagent processes (by executable) whose
// command line names a path under dir: those a test started for its own
// directory (the daemon and the CLI by their --config, a share's worker
// and reaper by its cipher directory). Other tests, and other people's
// runs on the same host, have kmsagent processes of their own, which
// come and go; they hold keys of their own and are not the test's to
// judge.
func ourProcesses(t *testing.T, dir string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != "kmsagent" {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && names(cmdline, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// names reports whether one of the NUL-separated arguments in cmdline
// is dir or a path under it.
func names(cmdline []byte, dir string) bool {
	dir = filepath.Clean(dir)
	for arg := range strings.SplitSeq(string(cmdline), "\x00") {
		if arg == dir || strings.HasPrefix(arg, dir+"/") {
			return true
		}
	}
	return false
}

// memory is a process's readable memory, with where each part came from.
type memory struct {
	data    []byte
	regions []region
}

type region struct {
	at   int // offset in data
	desc string
}

// where describes the mapping holding data[off].
func (m memory) where(off int) string {
	desc := "?"
	for _, r := range m.regions {
		if r.at > off {
			break
		}
		desc = r.desc
	}
	return desc
}

// find returns where form occurs, or "" when it does not.
func (m memory) find(form []byte) string {
	i := bytes.Index(m.data, form)
	if i < 0 {
		return ""
	}
	return m.where(i)
}

// readProcessMemory returns the readable memory of pid.
func readProcessMemory(t *testing.T, pid int) memory {
	t.Helper()
	m, err := readMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// otherProcessesMemory reads the memory of each of pids that still
// runs: other test packages start and end kmsagent processes of their
// own meanwhile, and one that exited holds no key.
func otherProcessesMemory(t *testing.T, pids []int) map[int]memory {
	t.Helper()
	all := map[int]memory{}
	for _, pid := range pids {
		m, err := readMemory(pid)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		all[pid] = m
	}
	return all
}

func readMemory(pid int) (memory, error) {
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return memory{}, err
	}
	defer maps.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return memory{}, err
	}
	defer mem.Close()
	var all memory
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[1][0] != 'r' {
			continue
		}
		if len(f) >= 6 && (strings.HasPrefix(f[5], "[vvar") || strings.HasPrefix(f[5], "[vsyscall")) {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		if end-start > 1<<30 {
			continue
		}
		buf := make([]byte, end-start)
		n, _ := mem.ReadAt(buf, int64(start))
		all.regions = append(all.regions, region{at: len(all.data), desc: sc.Text()})
		all.data = append(all.data, buf[:n]...)
	}
	return all, sc.Err()
}
