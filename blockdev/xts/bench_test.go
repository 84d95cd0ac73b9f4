package xts

import (
	"crypto/aes"
	"testing"

	"golang.org/x/crypto/xts"
)

const (
	benchSector = 4096
	benchBuf    = 1 << 20
)

// The benchmarks encrypt a 1 MiB buffer of 4096-byte sectors. "serial"
// runs one goroutine sector by sector (one core); "parallel" runs
// b.RunParallel over GOMAXPROCS goroutines, each with its own buffer,
// measuring throughput on all cores. Sectors* uses the multi-sector API,
// which splits the buffer between goroutines itself.

func benchKey() []byte {
	k := make([]byte, 64)
	for i := range k {
		k[i] = byte(i*7 + 1)
	}
	return k
}

func BenchmarkEncrypt(b *testing.B) { benchOurs(b, false) }
func BenchmarkDecrypt(b *testing.B) { benchOurs(b, true) }

func benchOurs(b *testing.B, decrypt bool) {
	for _, im := range impls(b) {
		for _, keyLen := range []int{32, 64} {
			c := mustCipher(b, benchKey()[:keyLen], im)
			crypt := c.EncryptSector
			if decrypt {
				crypt = c.DecryptSector
			}
			prefix := im.name + "/" + aesName(keyLen)
			b.Run(prefix+"/serial", func(b *testing.B) {
				buf := make([]byte, benchBuf)
				b.SetBytes(benchBuf)
				for b.Loop() {
					for off, s := 0, uint64(0); off < len(buf); off, s = off+benchSector, s+1 {
						crypt(buf[off:off+benchSector], buf[off:off+benchSector], s)
					}
				}
			})
			b.Run(prefix+"/parallel", func(b *testing.B) {
				b.SetBytes(benchBuf)
				b.RunParallel(func(pb *testing.PB) {
					buf := make([]byte, benchBuf)
					for pb.Next() {
						for off, s := 0, uint64(0); off < len(buf); off, s = off+benchSector, s+1 {
							crypt(buf[off:off+benchSector], buf[off:off+benchSector], s)
						}
					}
				})
			})
			b.Run(prefix+"/Sectors", func(b *testing.B) {
				buf := make([]byte, benchBuf)
				b.SetBytes(benchBuf)
				for b.Loop() {
					if decrypt {
						c.DecryptSectors(buf, buf, benchSector, 0)
					} else {
						c.EncryptSectors(buf, buf, benchSector, 0)
					}
				}
			})
		}
	}
}

func BenchmarkXCryptoEncrypt(b *testing.B) { benchXCrypto(b, false) }
func BenchmarkXCryptoDecrypt(b *testing.B) { benchXCrypto(b, true) }

func benchXCrypto(b *testing.B, decrypt bool) {
	for _, keyLen := range []int{32, 64} {
		c, err := xts.NewCipher(aes.NewCipher, benchKey()[:keyLen])
		if err != nil {
			b.Fatal(err)
		}
		crypt := c.Encrypt
		if decrypt {
			crypt = c.Decrypt
		}
		b.Run(aesName(keyLen)+"/serial", func(b *testing.B) {
			buf := make([]byte, benchBuf)
			b.SetBytes(benchBuf)
			for b.Loop() {
				for off, s := 0, uint64(0); off < len(buf); off, s = off+benchSector, s+1 {
					crypt(buf[off:off+benchSector], buf[off:off+benchSector], s)
				}
			}
		})
		b.Run(aesName(keyLen)+"/parallel", func(b *testing.B) {
			b.SetBytes(benchBuf)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, benchBuf)
				for pb.Next() {
					for off, s := 0, uint64(0); off < len(buf); off, s = off+benchSector, s+1 {
						crypt(buf[off:off+benchSector], buf[off:off+benchSector], s)
					}
				}
			})
		})
	}
}

func aesName(keyLen int) string {
	if keyLen == 32 {
		return "AES128"
	}
	return "AES256"
}
