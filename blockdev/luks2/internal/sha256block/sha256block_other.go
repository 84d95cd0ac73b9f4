//go:build !amd64 || purego

package sha256block

const haveSHANI = false

func blocksSHANI(s *State, p []byte) { panic("sha256block: no SHA extensions") }
