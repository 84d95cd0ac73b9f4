// Package cryptfs serves a gocryptfs v2 cipher directory (feature flags
// HKDF GCMIV128 DirIV EMENames LongNames Raw64) as a plaintext FUSE file
// system built on go-fuse's fs package.
//
// # Use
//
//	core, _ := cryptocore.New(masterKey) // the caller wipes core after unmount
//	err := cryptfs.CheckKey(dir, core)   // ErrWrongKey (or ErrKeyUnverified) before anything is mounted
//	root, err := cryptfs.NewRoot(cryptfs.Options{CipherDir: dir, Core: core, Logger: log})
//	server, err := cryptfs.Mount(mnt, root, cryptfs.MountOptions{AllowOther: true})
//	server.Wait() // returns after umount; the root has closed its descriptors
//
// InitDir writes the root gocryptfs.diriv of a new, empty cipher
// directory. Mount sets default_permissions with allow_other (the kernel
// checks modes), shows modes as they are (mode 0 included), uses 1 MiB
// requests and read-ahead and gocryptfs's one-second cache timeouts, and
// leaves flock and POSIX locks to the kernel.
//
// # Design
//
// Every operation reaches the cipher directory through directory file
// descriptors and *at system calls with O_NOFOLLOW, never through a path
// string that a concurrent rename or symlink swap in the cipher directory
// could redirect. Each directory node keeps an open descriptor and its
// gocryptfs.diriv in memory; descriptors live in a bounded LRU (dirFds) and
// are reopened from the parent's descriptor when needed. A node's cipher
// name is cached together with the (parent, name) it was computed for.
//
// File content follows gocryptfs: an empty file is stored empty; the first
// write creates the 18-byte header with a random file ID; data is stored in
// 4096-byte blocks sealed with AES-GCM bound to block number and file ID.
// A cipher block that is all zero bytes is a hole. Writing past the end of
// a file first pads a partial last block to a full block, so that skipped
// blocks are whole all-zero cipher blocks; growing truncate does the same
// and writes the new last partial block explicitly.
//
// Concurrency: each regular file inode has a content lock. Reads share it;
// writes, truncates and fallocate hold it exclusively, which serialises
// read-modify-write of partial blocks and the one-time creation of the
// header. go-fuse maps hard links to one inode, so all names of a file
// share the lock.
//
// Integrity: a block that fails authentication makes the whole read
// request fail with EIO (a short read would make the kernel shrink the
// file); the kernel then retries page by page, so the intact blocks around
// it still read. Each bad block is logged once, with the file path and the
// block number. Names in the cipher directory that do not decrypt are
// hidden and logged once.
package cryptfs
