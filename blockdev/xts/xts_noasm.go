//go:build !amd64 || purego

package xts

// haveAsm and haveVAES are false: there is no assembly for this
// architecture or build.
const (
	haveAsm  = false
	haveVAES = false
)

// The stubs below are never called because haveAsm is false; they exist so
// that the shared code compiles.

func encryptSectorAsm(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int) {
	panic("xts: no assembly on this platform")
}

func decryptSectorAsm(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int) {
	panic("xts: no assembly on this platform")
}

func encryptSectorVAES(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int) {
	panic("xts: no assembly on this platform")
}

func decryptSectorVAES(nr int, xk, tk *byte, sector uint64, dst, src *byte, n int) {
	panic("xts: no assembly on this platform")
}

func expandKey(enc []byte, key []byte) { panic("xts: no assembly on this platform") }

func invertKey(dec, enc []byte, nr int) { panic("xts: no assembly on this platform") }
