package source_test

import (
	"context"
	"errors"
	"log"

	"kmsagent/agent/source"
)

// At start the daemon resolves each volume's source; a disk that is not
// there yet is waited for, everything else is reported.
func ExampleResolve() {
	ctx := context.Background()
	dev, err := source.Resolve(ctx, "evs:0b7c6b2e-7a5d-4c4e-8f3a-5f0c2a9d1e44")
	switch {
	case errors.Is(err, source.ErrNotFound):
		log.Printf("waiting for the disk to be attached: %v", err)
	case err != nil:
		log.Print(err) // ErrInvalidSpec, ErrAmbiguous, I/O: needs the admin
	default:
		log.Printf("unlocking %s", dev)
	}
}

// On hot-plug the daemon asks whether the new device is a volume's.
func ExampleMatches() {
	ok, err := source.Matches(context.Background(), "UUID=3f2504e0-4f89-41d3-9a0c-0305e82c3301", "vdb")
	if err != nil {
		log.Print(err)
	}
	if ok {
		log.Print("vdb is the volume; unlocking")
	}
}
