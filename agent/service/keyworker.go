package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"kmsagent/agent/worker"
	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/token"
	"kmsagent/blockdev/volume"
)

// KeyWorkerCommand is the hidden command of the crypttab key worker; the
// binary must dispatch it to RunKeyWorker.
const KeyWorkerCommand = "crypttab-key-worker"

// StepDeliver is the key worker's step after the unwrap: it waits for its
// parent's go-ahead, then writes the key.
const StepDeliver = "deliver key"

// keyWriteTimeout bounds the worker's write of the key, as
// cryptkey.WriteTimeout does in-process.
const keyWriteTimeout = 10 * time.Second

// ErrNotApproved means the key worker's parent did not let the key go
// (its use could not be audited, or the parent went away).
var ErrNotApproved = errors.New("key use not approved")

// DeliverKey is a cryptkey.Deliverer: a key worker unwraps the keyslot
// passphrase of device and writes it to c, so that this process never
// holds it. The worker gets a copy of c as fd 4 and the read end of a
// pipe as fd 5; once it has the key it names the CMK and waits on the
// pipe. approve(cmk) runs then; only if it succeeds does the worker get
// the go-ahead byte, write the key once and close its copy. DeliverKey
// returns when the worker has exited; the caller closes c.
func (s *Service) DeliverKey(ctx context.Context, c *net.UnixConn, device string, approve func(token.KMS) error) (token.KMS, error) {
	conn, err := c.File()
	if err != nil {
		return token.KMS{}, fmt.Errorf("pass the connection on: %w", err)
	}
	defer conn.Close()
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return token.KMS{}, err
	}
	defer gateW.Close()
	p, err := worker.Start(worker.Command{
		What:       "crypttab key worker",
		Executable: s.o.Executable,
		Args:       s.keyWorkerArgs(device),
		Files:      []*os.File{conn, gateR},
		Socket:     s.o.WorkerSocket,
	})
	gateR.Close()
	if err != nil {
		return token.KMS{}, err
	}
	conn.Close()
	var cmk token.KMS
	var approveErr error
	asked := false
	_, err = p.WaitReady(ctx, readyTimeout, func(m worker.Message) {
		s.workerMessage(m)
		if m.CMK != nil {
			cmk = token.KMS{Provider: m.CMK.Provider, KeyID: m.CMK.KeyID}
		}
		if m.Step != StepDeliver || asked {
			return
		}
		asked = true
		if approveErr = approve(cmk); approveErr == nil {
			_, approveErr = gateW.Write([]byte{1})
		}
		gateW.Close()
	})
	// Gone, key and all, before the caller closes its connection.
	<-p.Done()
	if approveErr != nil {
		return cmk, approveErr
	}
	var we *worker.Error
	if errors.As(err, &we) && we.Step != "" {
		err = &crypt.StepError{Step: we.Step, Err: we}
	}
	return cmk, err
}

// keyWorkerArgs is the key worker's command line. Unlike the mount
// workers, it keeps the KMS client's own retries whatever KMSAttempts
// says: systemd-cryptsetup waits on this one request, and nothing tries
// it again after a failure.
func (s *Service) keyWorkerArgs(device string) []string {
	var out []string
	if p := s.configPath(); p != "" {
		out = append(out, "--config", p)
	}
	return append(out, KeyWorkerCommand, "--", device)
}

// RunKeyWorker is the crypttab key worker: it unwraps the keyslot
// passphrase of device through the KMS, reports the CMK, and on its
// parent's go-ahead (a byte on gate) writes the passphrase once to conn.
// It closes conn and wipes the key before it reports done.
func (s *Service) RunKeyWorker(ctx context.Context, device string, pipe *worker.Pipe, conn, gate *os.File) error {
	if err := worker.Harden(); err != nil {
		pipe.Warn(err.Error())
	}
	err := func() error {
		defer conn.Close()
		kms, err := s.OpenKMS(ctx)
		if err != nil {
			return &crypt.StepError{Step: crypt.StepKMS, Err: err}
		}
		f, err := volume.OpenDevice(device, false)
		if err != nil {
			return &crypt.StepError{Step: crypt.StepHeader, Err: err}
		}
		pass, cmk, err := volume.Passphrase(ctx, f, kms)
		f.Close()
		ref := worker.CMK{Provider: cmk.Provider, KeyID: cmk.KeyID}
		if err != nil {
			pipe.StepCMK(crypt.StepKMS, ref)
			return &crypt.StepError{Step: crypt.StepKMS, Err: err}
		}
		defer pass.Wipe()
		pipe.StepCMK(StepDeliver, ref)
		var b [1]byte
		if n, _ := gate.Read(b[:]); n != 1 || b[0] != 1 {
			return &crypt.StepError{Step: StepDeliver, Err: ErrNotApproved}
		}
		// A net.Conn, for the write deadline: the client may have
		// stopped reading.
		nc, err := net.FileConn(conn)
		if err != nil {
			return &crypt.StepError{Step: StepDeliver, Err: err}
		}
		defer nc.Close()
		nc.SetWriteDeadline(time.Now().Add(keyWriteTimeout))
		if _, err := nc.Write(pass.Bytes()); err != nil {
			return &crypt.StepError{Step: StepDeliver, Err: err}
		}
		return nil
	}()
	pipe.Done(err, stepOf)
	return err
}
