package cryptfs

import (
	"bytes"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mmapPattern is what the mmap helpers write and expect.
func mmapPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/4096)
	}
	return b
}

const mmapSize = 3*4096 + 100

func runHelper(h, path string) int {
	if err := helper(h, path); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func helper(h, path string) error {
	switch h {
	case "mmap-write":
		// Extend with ftruncate, fill through a shared mapping, msync.
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Truncate(mmapSize); err != nil {
			return err
		}
		m, err := unix.Mmap(int(f.Fd()), 0, mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("mmap: %w", err)
		}
		copy(m, mmapPattern(mmapSize))
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			return fmt.Errorf("msync: %w", err)
		}
		return unix.Munmap(m)
	case "mmap-read":
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return fmt.Errorf("mmap: %w", err)
		}
		defer unix.Munmap(m)
		if !bytes.Equal(m, mmapPattern(int(st.Size()))) {
			return fmt.Errorf("mapped content differs")
		}
		return nil
	}
	return fmt.Errorf("unknown helper %q", h)
}
