package main

import (
	"context"
	"errors"
	"fmt"
)

func runMountLuks(ctx context.Context, env *cliEnv, args []string) error {
	return errors.New("mount luks is not in this build yet")
}

// runUmountLuks closes the block volume named target (a mount point or a
// device-mapper name); a target that is neither is an error.
func runUmountLuks(ctx context.Context, env *cliEnv, target string, lazy bool) error {
	return fmt.Errorf("%s is not a kmsagent mount or volume (see kmsagent status)", target)
}
