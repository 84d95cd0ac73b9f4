//go:build !amd64 || purego

package aesgcm

// asmBuilt: this build has no assembly.
const asmBuilt = false
