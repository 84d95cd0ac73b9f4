//go:build amd64 && !purego

package sha256block

import "golang.org/x/sys/cpu"

// haveSHANI reports whether blocksSHANI can run: it needs the SHA
// extensions (CPUID leaf 7, EBX bit 29), which golang.org/x/sys/cpu does
// not report, besides AVX, SSE4.1 and SSSE3.
var haveSHANI = cpu.X86.HasAVX && cpu.X86.HasSSE41 && cpu.X86.HasSSSE3 && hasSHA()

func hasSHA() bool {
	if maxLeaf, _ := cpuid(0); maxLeaf < 7 {
		return false
	}
	_, ebx := cpuid(7)
	return ebx&(1<<29) != 0
}

//go:noescape
func blocksSHANI(s *State, p []byte)

//go:noescape
func blocks2SHANI(a, b *State, pa, pb []byte)

func cpuid(leaf uint32) (eax, ebx uint32)
