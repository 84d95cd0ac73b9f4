package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// Mode bits of cpio entries (the same as st_mode).
const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
	modeChar = 0o020000
)

// cpioWriter writes a "newc" cpio archive, the format the kernel unpacks
// as an initramfs. Writing it here needs no cpio tool and no root, and
// can hold device nodes (/dev/console must exist before /init runs, or
// /init has no stdout).
type cpioWriter struct {
	w    *bufio.Writer
	ino  uint32
	dirs map[string]bool
	err  error
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), dirs: map[string]bool{"": true, ".": true}}
}

// header writes one entry header and its name, padded to 4 bytes.
func (c *cpioWriter) header(name string, mode uint32, size int64, rmajor, rminor uint32) {
	if c.err != nil {
		return
	}
	if size > 0xffffffff {
		c.err = fmt.Errorf("cpio: %s: %d bytes is too large for newc", name, size)
		return
	}
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with NUL), check
	_, c.err = fmt.Fprintf(c.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, uint32(size), 0, 0, rmajor, rminor, len(name)+1, 0)
	if c.err == nil {
		_, c.err = c.w.WriteString(name + "\x00")
	}
	c.pad(110 + len(name) + 1)
}

func (c *cpioWriter) pad(n int) {
	if c.err != nil {
		return
	}
	if r := n % 4; r != 0 {
		_, c.err = c.w.Write(make([]byte, 4-r))
	}
}

// clean turns an absolute VM path into an archive name ("bin/sh").
func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// mkdirAll adds the directory and its missing parents.
func (c *cpioWriter) mkdirAll(dir string) {
	dir = clean(dir)
	if c.dirs[dir] {
		return
	}
	c.mkdirAll(path.Dir(dir))
	c.header(dir, modeDir|0o755, 0, 0, 0)
	c.dirs[dir] = true
}

// file adds a regular file with the given content.
func (c *cpioWriter) file(name string, perm uint32, data []byte) {
	name = clean(name)
	c.mkdirAll(path.Dir(name))
	c.header(name, modeFile|perm, int64(len(data)), 0, 0)
	if c.err == nil {
		_, c.err = c.w.Write(data)
	}
	c.pad(len(data))
}

// fileFrom adds a regular file copied from the host.
func (c *cpioWriter) fileFrom(name string, perm uint32, hostPath string) {
	if c.err != nil {
		return
	}
	f, err := os.Open(hostPath)
	if err != nil {
		c.err = fmt.Errorf("cpio: %w", err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		c.err = fmt.Errorf("cpio: %w", err)
		return
	}
	if !fi.Mode().IsRegular() {
		c.err = fmt.Errorf("cpio: %s is not a regular file", hostPath)
		return
	}
	name = clean(name)
	c.mkdirAll(path.Dir(name))
	c.header(name, modeFile|perm, fi.Size(), 0, 0)
	if c.err != nil {
		return
	}
	n, err := io.Copy(c.w, f)
	if err == nil && n != fi.Size() {
		err = fmt.Errorf("%s changed size while copied", hostPath)
	}
	if err != nil {
		c.err = fmt.Errorf("cpio: copy %s: %w", hostPath, err)
		return
	}
	c.pad(int(n % 4))
}

// symlink adds a symbolic link.
func (c *cpioWriter) symlink(name, target string) {
	name = clean(name)
	c.mkdirAll(path.Dir(name))
	c.header(name, modeLink|0o777, int64(len(target)), 0, 0)
	if c.err == nil {
		_, c.err = c.w.WriteString(target)
	}
	c.pad(len(target))
}

// charDev adds a character device node.
func (c *cpioWriter) charDev(name string, perm, major, minor uint32) {
	name = clean(name)
	c.mkdirAll(path.Dir(name))
	c.header(name, modeChar|perm, 0, major, minor)
}

// close writes the trailer and flushes.
func (c *cpioWriter) close() error {
	c.header("TRAILER!!!", 0, 0, 0, 0)
	if c.err == nil {
		c.err = c.w.Flush()
	}
	return c.err
}
