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
	case "write":
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt([]byte("new"), 1); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	case "fallocate":
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fallocate(int(f.Fd()), 0, 0, 8192)
	case "truncate":
		return os.Truncate(path, 2)
	case "open-trunc":
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return err
		}
		return f.Close()
	case "mkentries":
		// Create one entry of each kind in directory path, with the
		// modes a program passes to the system calls (umask 022).
		unix.Umask(0o022)
		for _, c := range []struct {
			name string
			mode uint32
		}{{"f", 0o666}, {"suid", 0o4755}, {"sgid", 0o2755}} {
			fd, err := unix.Open(path+"/"+c.name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, c.mode)
			if err != nil {
				return fmt.Errorf("create %s: %w", c.name, err)
			}
			unix.Close(fd)
		}
		if err := unix.Mkdir(path+"/d", 0o777); err != nil {
			return fmt.Errorf("mkdir: %w", err)
		}
		if err := unix.Mknod(path+"/fifo", unix.S_IFIFO|0o2676, 0); err != nil {
			return fmt.Errorf("mknod: %w", err)
		}
		if err := unix.Symlink("f", path+"/l"); err != nil {
			return fmt.Errorf("symlink: %w", err)
		}
		return nil
	}
	return fmt.Errorf("unknown helper %q", h)
}
