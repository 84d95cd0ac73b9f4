package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"kmsagent/agent/service"
	"kmsagent/agent/worker"
)

// workerExecCommand is what kmsagent-worker@.service runs for each
// connection to the worker socket (standard input): see
// agent/worker/socket.go.
const workerExecCommand = "worker-exec"

// serviceWorkerCommand is the service worker's hidden command.
const serviceWorkerCommand = service.ServiceWorkerCommand

// workerCommands are the commands worker-exec starts.
var workerCommands = []string{
	fuseWorkerCommand, fuseReaperCommand, luksWorkerCommand, service.KeyWorkerCommand, service.ServiceWorkerCommand,
}

func runWorkerExec(ctx context.Context, env *cliEnv, args []string) error {
	if _, err := parseFlags(env, workerExecCommand, "", args, 0, 0, nil); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	err = worker.ServeExec(os.Stdin, self, worker.AllowCommands(workerCommands...))
	return fmt.Errorf("%s (started by kmsagent-worker.socket for each connection): %w", workerExecCommand, err)
}

// runServiceWorker is the service worker (service.RunServiceWorker): a
// verb of a confined daemon, run outside its sandbox.
func runServiceWorker(ctx context.Context, env *cliEnv, args []string) error {
	pipe, err := worker.OpenPipe()
	if err != nil {
		return fmt.Errorf("%s is started by kmsagent run", service.ServiceWorkerCommand)
	}
	var runDir, socket string
	var kmsAttempts int
	var lazy bool
	pos, err := parseFlags(env, service.ServiceWorkerCommand, "VERB ARG", args, 2, 2, func(fs *flag.FlagSet) {
		fs.StringVar(&runDir, "run-dir", "", "share run directory")
		fs.StringVar(&socket, "worker-socket", "", "worker socket the workers are started through")
		fs.IntVar(&kmsAttempts, "kms-attempts", 0, "tries of a throttled or unavailable KMS call (0: the default)")
		fs.BoolVar(&lazy, "lazy", false, "close: detach now")
	})
	var req service.ServiceRequest
	if err == nil {
		req, err = service.ParseServiceRequest(pos[0], pos[1], lazy)
	}
	var svc *service.Service
	if err == nil {
		o := workerOptions(env, nil, runDir, kmsAttempts)
		o.WorkerSocket = socket
		svc, err = service.New(o)
	}
	if err != nil {
		pipe.Finish(nil, err, nil)
		return err
	}
	if err := svc.RunServiceWorker(ctx, req, pipe); err != nil {
		return errors.New("service worker: " + err.Error())
	}
	return nil
}
