//go:build amd64 && !purego

package aesgcm

// asmBuilt: this build has the assembly, so a CPU with the instructions
// must be able to run it.
const asmBuilt = true
