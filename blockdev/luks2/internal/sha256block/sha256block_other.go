//go:build !amd64 || purego

package sha256block

const haveSHANI = false

func blocksSHANI(s *State, p []byte) { panic("sha256block: no SHA extensions") }

func blocks2SHANI(a, b *State, pa, pb []byte) { panic("sha256block: no SHA extensions") }
