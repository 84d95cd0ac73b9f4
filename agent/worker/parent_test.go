package worker

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"kmsagent/kmsclient"
)

// The test binary doubles as the worker: with KMSAGENT_TEST_WORKER set it
// plays the part named there instead of running the tests.
func TestMain(m *testing.M) {
	if part := os.Getenv("KMSAGENT_TEST_WORKER"); part != "" {
		os.Exit(playWorker(part))
	}
	if os.Getenv("KMSAGENT_TEST_EXEC") != "" {
		os.Exit(playExec())
	}
	os.Exit(m.Run())
}

func playWorker(part string) int {
	pipe, err := OpenPipe()
	if err != nil {
		return 3
	}
	switch part {
	case "ready":
		pipe.Step("kms")
		pipe.Warn("memory not locked")
		pipe.Done(nil, nil)
	case "key-disabled":
		pipe.Step("kms")
		pipe.Done(errors.Join(errors.New("unwrap"), kmsclient.ErrKeyDisabled), func(err error) (string, error) { return "kms", err })
	case "die":
		pipe.Step("keyslot")
		return 9
	case "hang":
		pipe.Step("kms")
		time.Sleep(time.Minute)
	case "file":
		// The first file passed gets a word.
		f := pipe.File(0, "passed")
		if f == nil {
			pipe.Done(errors.New("no file passed"), nil)
			return 1
		}
		if _, err := f.WriteString("hello from the worker"); err != nil {
			pipe.Done(err, nil)
			return 1
		}
		pipe.Done(nil, nil)
	}
	return 0
}

func startPart(t *testing.T, part string) *Proc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KMSAGENT_TEST_WORKER", part)
	p, err := Start(Command{What: "test worker", Executable: self, Args: []string{"-test.run=^$"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWaitReady(t *testing.T) {
	ctx := context.Background()
	t.Run("ready", func(t *testing.T) {
		p := startPart(t, "ready")
		var steps, warnings []string
		m, err := p.WaitReady(ctx, time.Minute, func(m Message) {
			if m.Step != "" {
				steps = append(steps, m.Step)
			}
			if m.Warning != "" {
				warnings = append(warnings, m.Warning)
			}
		})
		if err != nil || !m.Ready || m.PID != p.PID() {
			t.Fatalf("WaitReady: %+v, %v; want ready from pid %d", m, err, p.PID())
		}
		if len(steps) != 1 || steps[0] != "kms" || len(warnings) != 1 {
			t.Fatalf("steps %q, warnings %q", steps, warnings)
		}
		<-p.Done()
	})
	t.Run("typed error", func(t *testing.T) {
		p := startPart(t, "key-disabled")
		_, err := p.WaitReady(ctx, time.Minute, nil)
		var we *Error
		if !errors.Is(err, kmsclient.ErrKeyDisabled) || !errors.As(err, &we) || we.Step != "kms" {
			t.Fatalf("WaitReady: %#v; want a key-disabled error of step kms", err)
		}
	})
	t.Run("died", func(t *testing.T) {
		p := startPart(t, "die")
		_, err := p.WaitReady(ctx, time.Minute, nil)
		var died *DiedError
		if !errors.As(err, &died) || died.Step != "keyslot" {
			t.Fatalf("WaitReady: %v; want a DiedError after step keyslot", err)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 9 {
			t.Fatalf("WaitReady: %v; want the exit status 9", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		p := startPart(t, "hang")
		ctx, cancel := context.WithCancel(ctx)
		_, err := p.WaitReady(ctx, time.Minute, func(Message) { cancel() })
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitReady: %v; want context.Canceled", err)
		}
		select {
		case <-p.Done():
		default:
			t.Fatal("worker still running after a cancelled wait")
		}
	})
}

// TestWatch: Watch returns when a process that is not a child exits.
func TestWatch(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Watch(context.Background(), cmd.Process.Pid, nil) }()
	select {
	case err := <-done:
		t.Fatalf("Watch returned %v while the process runs", err)
	case <-time.After(100 * time.Millisecond):
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Gone already, and not the expected process: both return at once.
	if err := Watch(context.Background(), cmd.Process.Pid, nil); err != nil {
		t.Fatal(err)
	}
	if err := Watch(context.Background(), os.Getpid(), func() bool { return false }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Watch(ctx, os.Getpid(), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch of a live process with a cancelled ctx: %v", err)
	}
}
