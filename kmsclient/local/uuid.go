package local

import "crypto/rand"

// randRead fills b from the system CSPRNG, which does not fail on Linux.
func randRead(b []byte) { rand.Read(b) }
