package main

import (
	"context"
	"fmt"
)

func runServe(ctx context.Context, env *cliEnv, args []string) error {
	return fmt.Errorf("kms serve is not in this build yet")
}
