//go:build !amd64 || purego

package aesgcm

// haveAsm is false: only the amd64 assembly exists, and New refuses to
// build an AEAD without it.
const haveAsm = false

func expandKey(key *[KeySize]byte, rk *[roundKeysLen]byte)     { panic("aesgcm: no assembly") }
func initKey(rk *[roundKeysLen]byte, htab *[hashTableLen]byte) { panic("aesgcm: no assembly") }
func ghashBlocks(htab *[hashTableLen]byte, y *[16]byte, src *byte, n int) {
	panic("aesgcm: no assembly")
}
func ctrBlocks(rk *[roundKeysLen]byte, ctr *[16]byte, dst, src *byte, n int) {
	panic("aesgcm: no assembly")
}
