// Command loopback mounts go-fuse's loopback file system with FUSE
// passthrough disabled, so that every read and write crosses user space as
// it does in an encrypting file system. It is the reference point of the
// share benchmark (bench.sh): the cost of FUSE itself.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a loopback node whose files never offer a passthrough fd.
type node struct{ *fs.LoopbackNode }

var (
	_ fs.NodeOpener      = (*node)(nil)
	_ fs.NodeCreater     = (*node)(nil)
	_ fs.NodeWrapChilder = (*node)(nil)
)

// WrapChild makes every node below the root one of ours too.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{ops.(*fs.LoopbackNode)}
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fl, errno := n.LoopbackNode.Open(ctx, flags)
	return wrap(fh), fl, errno
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	in, fh, fl, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	return in, wrap(fh), fl, errno
}

// file hides LoopbackFile's PassthroughFd.
type file struct{ *fs.LoopbackFile }

func (file) PassthroughFd() (int, bool) { return 0, false }

func wrap(fh fs.FileHandle) fs.FileHandle {
	if lf, ok := fh.(*fs.LoopbackFile); ok {
		return file{lf}
	}
	return fh
}

func main() {
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: loopback BACKING_DIR MOUNTPOINT")
		os.Exit(2)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(flag.Arg(0), &st); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root := &fs.LoopbackRoot{Path: flag.Arg(0), Dev: uint64(st.Dev)}
	rootNode := &node{&fs.LoopbackNode{RootData: root}}
	root.RootNode = rootNode
	sec := time.Second
	server, err := fs.Mount(flag.Arg(1), rootNode, &fs.Options{
		EntryTimeout: &sec, AttrTimeout: &sec, NegativeTimeout: &sec,
		MountOptions: fuse.MountOptions{FsName: flag.Arg(0), Name: "loopback", MaxWrite: fuse.MAX_KERNEL_WRITE, DirectMount: true},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; server.Unmount() }()
	server.Wait()
}
