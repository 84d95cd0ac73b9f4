package audit

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// killOptions rotate every dozen records or so, so that kills land in
// rotations as well as in writes.
func killOptions() Options { return Options{MaxSize: 3 << 10, Keep: 10000} }

// TestMain runs the child of TestKillWriter when the environment asks
// for it, and the tests otherwise.
func TestMain(m *testing.M) {
	if spec := os.Getenv("KMSAGENT_AUDIT_CHILD"); spec != "" {
		writerMain(spec)
	}
	os.Exit(m.Run())
}

// writerMain writes records until killed and prints each number once
// Write has returned.
func writerMain(spec string) {
	path, run, _ := strings.Cut(spec, ",")
	l, err := Open(path, killOptions())
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for i := 0; ; i++ {
		if err := l.Write(context.Background(), rec(fmt.Sprintf("run%s-%d", run, i))); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(i)
	}
}

// TestKillWriter kills a writing process with SIGKILL at random points,
// again and again, and checks after each run that every record Write
// had acknowledged is in the log exactly once and in order, plus at most
// the one in flight. SIGKILL does not drop the page cache, so this shows
// what a crashed daemon leaves, not what a power cut does; fdatasync
// before the acknowledgement is what covers the latter.
func TestKillWriter(t *testing.T) {
	const runs = 15
	path := filepath.Join(logDir(t), "audit.log")
	acked := make([]int, runs)
	for run := range runs {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), fmt.Sprintf("KMSAGENT_AUDIT_CHILD=%s,%d", path, run))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 1 + rand.IntN(40)
		acked[run] = -1
		sc := bufio.NewScanner(out)
		killed := false
		for sc.Scan() {
			n, err := strconv.Atoi(sc.Text())
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("child: %s", sc.Text())
			}
			acked[run] = n
			if n+1 >= killAfter && !killed {
				cmd.Process.Kill() // SIGKILL, wherever it is
				killed = true
			}
		}
		cmd.Wait()
	}

	res, err := ReadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	// A SIGKILL cannot interrupt a write(2) to a regular file part way,
	// so no line should be torn; tolerate none.
	if len(res.Damaged) > 0 {
		t.Fatalf("damaged lines: %v", res.Damaged)
	}
	next := make([]int, runs)
	for _, r := range res.Records {
		var run, i int
		if _, err := fmt.Sscanf(r.Volume, "run%d-%d", &run, &i); err != nil {
			t.Fatalf("stray record %q", r.Volume)
		}
		if i != next[run] {
			t.Fatalf("run %d: record %d after %d: lost, duplicated or out of order", run, i, next[run]-1)
		}
		next[run]++
	}
	for run := range runs {
		if last := next[run] - 1; last != acked[run] && last != acked[run]+1 {
			t.Errorf("run %d: log ends at record %d, %d was acknowledged", run, last, acked[run])
		}
	}
	gens, _ := generations(path)
	t.Logf("%d runs, %d records in %d files", runs, len(res.Records), len(gens))
}
