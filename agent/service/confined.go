package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"kmsagent/agent/worker"
)

// A confined service: the daemon under systemd runs in a mount namespace
// of its own (ProtectSystem=strict, ProtectHome=, PrivateTmp= and the
// rest of its unit's sandbox), where a mount or unmount it made would
// never reach the host. With Options.Confined, the verbs that change the
// host's mounts, Mount and Close, run in a service worker started through
// the worker socket, outside that namespace: the service worker runs the
// same verb on an unconfined Service and reports what it did as JSON.
// Status stays in the daemon: it only reads, and runs every few seconds.
// It reads the host's mount table (HostMountTable), since the mount IDs
// the share workers recorded are the host's; the namespace's copies of
// those mounts have other IDs.

// ServiceWorkerCommand is the hidden command of the service worker. The
// binary must dispatch it to RunServiceWorker.
const ServiceWorkerCommand = "service-worker"

// The service worker's verbs.
const (
	verbMount = "mount"
	verbClose = "close"
)

// ServiceRequest is a service worker's command line, parsed.
type ServiceRequest struct {
	Verb   string
	Spec   Spec   // mount
	Target string // close
	Lazy   bool   // close
}

// serviceWorkerArgs is the service worker's command line for req.
func (s *Service) serviceWorkerArgs(req ServiceRequest) ([]string, error) {
	var args []string
	if s.o.RunDir != "" {
		args = append(args, "--run-dir", s.o.RunDir)
	}
	if s.o.WorkerSocket != "" {
		args = append(args, "--worker-socket", s.o.WorkerSocket)
	}
	switch req.Verb {
	case verbMount:
		b, err := json.Marshal(req.Spec)
		if err != nil {
			return nil, err
		}
		args = append(args, "--", verbMount, string(b))
	case verbClose:
		args = append(args, "--lazy="+strconv.FormatBool(req.Lazy), "--", verbClose, req.Target)
	default:
		return nil, fmt.Errorf("service worker: no verb %q", req.Verb)
	}
	return s.workerArgs(ServiceWorkerCommand, args...), nil
}

// ParseServiceRequest reads a service worker's verb and argument.
func ParseServiceRequest(verb, arg string, lazy bool) (ServiceRequest, error) {
	req := ServiceRequest{Verb: verb}
	switch verb {
	case verbMount:
		if err := json.Unmarshal([]byte(arg), &req.Spec); err != nil {
			return req, fmt.Errorf("service worker: the volume to mount: %w", err)
		}
	case verbClose:
		req.Target, req.Lazy = arg, lazy
	default:
		return req, fmt.Errorf("service worker: no verb %q (mount, close)", verb)
	}
	return req, nil
}

// runInWorker runs req in a service worker and decodes its result into
// out; progress gets the steps it reports.
func (s *Service) runInWorker(ctx context.Context, req ServiceRequest, out any, progress func(string)) (*worker.CMK, error) {
	args, err := s.serviceWorkerArgs(req)
	if err != nil {
		return nil, err
	}
	p, err := worker.Start(worker.Command{What: "service worker (" + req.Verb + ")", Executable: s.o.Executable, Args: args, Socket: s.o.WorkerSocket})
	if err != nil {
		return nil, err
	}
	m, err := p.WaitReady(ctx, readyTimeout, func(m worker.Message) {
		s.workerMessage(m)
		if m.Step != "" && progress != nil {
			progress(m.Step)
		}
	})
	if len(m.Result) > 0 {
		if jerr := json.Unmarshal(m.Result, out); jerr != nil && err == nil {
			err = fmt.Errorf("service worker (%s): unreadable result: %w", req.Verb, jerr)
		}
	}
	return m.CMK, err
}

// RunServiceWorker is the service worker: it runs req on this Service,
// which must not be confined, and reports the result over pipe.
func (s *Service) RunServiceWorker(ctx context.Context, req ServiceRequest, pipe *worker.Pipe) error {
	if s.o.Confined {
		err := errors.New("service worker: confined itself; it must run outside the daemon's sandbox")
		pipe.Finish(nil, err, nil)
		return err
	}
	// Notes (stale mounts removed, a worker's warnings) go to the
	// parent, which logs them.
	s.o.Notify = func(n Note) {
		if n.Warning {
			pipe.Warn(n.Message)
		}
	}
	switch req.Verb {
	case verbMount:
		m, err := s.MountWithProgress(ctx, req.Spec, pipe.Step)
		var cmk *worker.CMK
		if m.KeyID != "" || m.Provider != "" {
			cmk = &worker.CMK{Provider: m.Provider, KeyID: m.KeyID}
		}
		pipe.Finish(m, err, cmk)
		return err
	case verbClose:
		u, err := s.Close(ctx, req.Target, req.Lazy)
		pipe.Finish(u, err, nil)
		return err
	}
	err := fmt.Errorf("service worker: no verb %q", req.Verb)
	pipe.Finish(nil, err, nil)
	return err
}

// mountConfined is Mount in a service worker.
func (s *Service) mountConfined(ctx context.Context, spec Spec, progress func(string)) (Mounted, error) {
	var m Mounted
	cmk, err := s.runInWorker(ctx, ServiceRequest{Verb: verbMount, Spec: spec}, &m, progress)
	if progress != nil {
		progress("")
	}
	if err != nil {
		// The CMK of a key use that failed, for the audit record.
		out := Mounted{}
		if cmk != nil {
			out.KeyID, out.Provider = cmk.KeyID, cmk.Provider
		}
		return out, err
	}
	return m, nil
}

// closeConfined is Close in a service worker.
func (s *Service) closeConfined(ctx context.Context, target string, lazy bool) (Unmounted, error) {
	var u Unmounted
	_, err := s.runInWorker(ctx, ServiceRequest{Verb: verbClose, Target: target, Lazy: lazy}, &u, nil)
	return u, err
}
