package main

import (
	"context"
	"errors"
)

var errLuksNotYet = errors.New("LUKS2 volumes are not supported by this build yet")

func runFormatLuks(ctx context.Context, env *cliEnv, args []string) error { return errLuksNotYet }

func runExportKeyLuks(ctx context.Context, env *cliEnv, path, passFile string) error {
	return errLuksNotYet
}

func runRewrapLuks(ctx context.Context, env *cliEnv, path, keyID string) error { return errLuksNotYet }
