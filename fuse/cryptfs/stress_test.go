package cryptfs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"kmsagent/agent/tstest"
)

// TestStress runs writers and readers in parallel on shared files at
// random offsets and sizes and applies every write to a plain file too;
// afterwards (and after a remount) the files must be identical.
//
// Writers own interleaved regions of each file, so the final content does
// not depend on scheduling, while regions are not block aligned: blocks
// are shared between writers, and every partial-block write is a
// read-modify-write racing with its neighbours'. Each byte written carries
// its writer's number in the top bits, so readers can check every byte
// they see mid-flight: zero (not written yet) or written by its owner.
func TestStress(t *testing.T) {
	tstest.NeedFUSE(t)
	k := newTestKey(t)
	cipher := newCipherDir(t)
	m := mountFS(t, cipher, k, Options{}, MountOptions{})
	plain := t.TempDir()

	const writers, readers = 4, 3
	budget := 4 * time.Second
	if testing.Short() {
		budget = time.Second
	}
	type layout struct {
		name    string
		region  int // bytes owned by one writer in turn
		maxSize int
		maxLen  int
	}
	layouts := []layout{
		{"small-regions", 1500, 2 << 20, 1500},
		{"large-regions", 300000, 6 << 20, 300000},
		{"tiny-file", 100, 3 * bs, 100},
	}
	owner := func(l layout, off int) int { return off / l.region % writers }
	type pair struct{ mnt, plain *os.File }
	files := make([]pair, len(layouts))
	for i, l := range layouts {
		mf, err := os.OpenFile(m.path(l.name), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		pf, err := os.OpenFile(filepath.Join(plain, l.name), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		files[i] = pair{mf, pf}
	}

	deadline := time.Now().Add(budget)
	var wg sync.WaitGroup
	errs := make(chan error, writers+readers)
	var ops [writers + readers]int
	for w := range writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 42))
			// Each writer also has its own descriptors, as separate
			// processes would.
			own := make([]*os.File, len(layouts))
			for i, l := range layouts {
				f, err := os.OpenFile(m.path(l.name), os.O_RDWR, 0)
				if err != nil {
					errs <- err
					return
				}
				defer f.Close()
				own[i] = f
				_ = l
			}
			buf := make([]byte, 300000)
			for time.Now().Before(deadline) {
				i := r.IntN(len(layouts))
				l := layouts[i]
				nRegions := l.maxSize / l.region
				reg := r.IntN(nRegions/writers)*writers + w
				start := reg*l.region + r.IntN(l.region)
				n := 1 + r.IntN(min(l.maxLen, (reg+1)*l.region-start))
				if r.IntN(4) == 0 {
					n = 1 + r.IntN(min(32, (reg+1)*l.region-start))
				}
				data := buf[:n]
				for j := range data {
					data[j] = byte(w+1)<<5 | byte(r.Uint32()&0x1f)
				}
				f := own[i]
				if r.IntN(2) == 0 {
					f = files[i].mnt
				}
				if _, err := f.WriteAt(data, int64(start)); err != nil {
					errs <- fmt.Errorf("writer %d: %s: write %d@%d: %w", w, l.name, n, start, err)
					return
				}
				if _, err := files[i].plain.WriteAt(data, int64(start)); err != nil {
					errs <- err
					return
				}
				ops[w]++
			}
		})
	}
	for rd := range readers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(rd), 7))
			buf := make([]byte, 256<<10)
			for time.Now().Before(deadline) {
				i := r.IntN(len(layouts))
				l := layouts[i]
				off := r.IntN(l.maxSize)
				n := 1 + r.IntN(len(buf))
				if r.IntN(2) == 0 {
					off = off / bs * bs
				}
				got, err := files[i].mnt.ReadAt(buf[:n], int64(off))
				if err != nil && got == 0 && off < l.maxSize {
					// EOF before the file grew there is fine; an
					// error is not.
					if err.Error() != "EOF" {
						errs <- fmt.Errorf("reader %d: %s: read %d@%d: %w", rd, l.name, n, off, err)
						return
					}
				}
				for j, b := range buf[:got] {
					if b != 0 && int(b>>5)-1 != owner(l, off+j) {
						errs <- fmt.Errorf("reader %d: %s: byte %d is %#x, written by writer %d, owned by %d",
							rd, l.name, off+j, b, int(b>>5)-1, owner(l, off+j))
						return
					}
				}
				ops[writers+rd]++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("operations per goroutine: %v", ops)

	compare := func(when string) {
		t.Helper()
		for _, l := range layouts {
			want, err := os.ReadFile(filepath.Join(plain, l.name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(m.path(l.name))
			if err != nil {
				t.Fatalf("%s: %s: %v", when, l.name, err)
			}
			if !bytes.Equal(got, want) {
				i := 0
				for i < len(got) && i < len(want) && got[i] == want[i] {
					i++
				}
				t.Errorf("%s: %s differs from the plain copy at byte %d (len %d, want %d)", when, l.name, i, len(got), len(want))
			}
		}
	}
	compare("mounted")
	for _, p := range files {
		p.mnt.Close()
		p.plain.Close()
	}
	m.unmount(t)
	m = mountFS(t, cipher, k, Options{}, MountOptions{})
	compare("after remount")
	if logs := m.logs.String(); logs != "" {
		t.Errorf("warnings:\n%s", logs)
	}
}

// TestStressNamespace creates, renames and removes entries with short and
// long names from several goroutines in shared directories.
func TestStressNamespace(t *testing.T) {
	m, _ := newFS(t)
	const workers = 4
	for _, d := range []string{"a", "b"} {
		os.Mkdir(m.path(d), 0o755)
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 3))
			name := func(i int) string {
				n := fmt.Sprintf("w%d-%d", w, i)
				if i%3 == 0 {
					n += string(bytes.Repeat([]byte{'n'}, 200))
				}
				return n
			}
			type entry struct{ dir, content string }
			live := map[string]entry{}
			for i := range 400 {
				switch op := r.IntN(4); {
				case op == 0 || len(live) == 0:
					d := []string{"a", "b"}[r.IntN(2)]
					n := name(i)
					if err := os.WriteFile(m.path(d, n), []byte(n), 0o644); err != nil {
						errs <- err
						return
					}
					live[n] = entry{d, n}
				default:
					var n string
					for n = range live {
						break
					}
					e := live[n]
					d := e.dir
					if op == 1 {
						if err := os.Remove(m.path(d, n)); err != nil {
							errs <- err
							return
						}
						delete(live, n)
						continue
					}
					nd := []string{"a", "b"}[r.IntN(2)]
					nn := name(i)
					if err := os.Rename(m.path(d, n), m.path(nd, nn)); err != nil {
						errs <- err
						return
					}
					delete(live, n)
					live[nn] = entry{nd, e.content}
					got, err := os.ReadFile(m.path(nd, nn))
					if err != nil || string(got) != e.content {
						errs <- fmt.Errorf("%s after rename: %q, %v", nn, got, err)
						return
					}
				}
			}
			// Leave the survivors for the listing check.
			for n, e := range live {
				if err := os.Rename(m.path(e.dir, n), m.path("a", n)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(m.path("b")); len(ents) != 0 {
		t.Errorf("b not empty: %d entries", len(ents))
	}
	checkLongNames(t, m.cipher)
	if logs := m.logs.String(); logs != "" {
		t.Errorf("warnings:\n%s", logs)
	}
}
