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
// Mount sets the process's umask to 0: the kernel applies the caller's
// umask to the modes it passes, and the process's own umask would apply a
// second time (0666 under umask 002 would become 0644). A process serving
// shares does nothing else, so the process-wide setting is ours to make.
//
// InitDir writes the root gocryptfs.diriv of a new, empty cipher
// directory. Mount negotiates POSIX ACLs with the kernel, which then
// checks every access against modes and ACLs itself, with or without
// allow_other; it shows modes as they are (mode 0 included), uses 1 MiB
// requests and read-ahead and gocryptfs's one-second cache timeouts,
// leaves flock and POSIX locks to the kernel, and clears set-user-ID and
// set-group-ID bits on unprivileged writes itself (FUSE_HANDLE_KILLPRIV_V2,
// see killpriv.go), which spares the kernel's capability query before
// every write. A read decrypts its blocks in the buffer it read them into
// and replies from there (contentenc.DecryptBlocks, pooledResult in
// file.go): one buffer per request, hot in the cache from the read to the
// reply.
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
// Full disk: a write cut short would leave a partial cipher block that
// no longer authenticates: the old content of the block, fsync'ed or
// not, would be lost and the file size would exceed what was
// acknowledged. So every write, truncation and fallocate that rewrites a
// block first reserves the cipher bytes it will write (fallocate with
// FALLOC_FL_KEEP_SIZE, as gocryptfs does), and running out of space
// fails it with ENOSPC before anything changed. A write that only
// appends whole blocks (streaming to a file that ends at a block
// boundary) skips the reservation and is truncated back if it fails.
//
// Concurrency: each regular file inode has a content lock. Reads share it;
// writes, truncates and fallocate hold it exclusively, which serialises
// read-modify-write of partial blocks and the one-time creation of the
// header. go-fuse maps hard links to one inode, so all names of a file
// share the lock.
//
// Extended attributes and ACLs are stored as gocryptfs 2.3 stores them,
// so either reads what the other wrote. Every name except the two POSIX
// ACL names, whatever its namespace (user, trusted, security, system), is
// encrypted whole into "user.gocryptfs.<cipher>" with its value sealed
// like a content block; the cipher directory then needs nothing but user
// xattrs, and a share can hold overlayfs's trusted.overlay.* state and
// file capabilities. The ACLs, system.posix_acl_access and
// system.posix_acl_default, are stored as they are (numeric ids and
// permission bits, in the clear), because the kernel has to act on them:
// the cipher directory's file system applies a default ACL to each entry
// we create and updates the mode when an access ACL is set, and the FUSE
// mount reads them back for its permission checks. That is gocryptfs -acl,
// which is always on here; ACLs without kernel enforcement would promise
// an access control that nothing applies. Consequences:
//   - the kernel checks permissions on private mounts too (FUSE_POSIX_ACL
//     implies default_permissions), which costs a GETATTR of the parent
//     directory after a create or unlink;
//   - an access ACL is set with the caller's credentials when we run as
//     root, so that the set-group-ID bit is cleared as on a local file
//     system;
//   - the kernel applies the caller's umask before a create reaches us,
//     also under a default ACL, where a local file system would ignore it
//     (go-fuse does not pass the umask on; gocryptfs behaves the same);
//   - security.capability is served on every mount, so a write drops a
//     capability as on a local file system. gocryptfs hides it unless
//     mounted -suid, to save work on the kernel's query before every
//     write, and a binary changed on a nosuid mount then keeps its
//     capability; here each node remembers that it has none instead.
//   - where SELinux is off, a file without a label answers a read of
//     security.selinux with EOPNOTSUPP rather than ENODATA, so that
//     ls -l stops asking for labels after the first file (a request
//     per file that no kernel cache spares); stored labels still read
//     back (see xattr.go).
//
// Integrity: a block that fails authentication makes the whole read
// request fail with EIO (a short read would make the kernel shrink the
// file); the kernel then retries page by page, so the intact blocks around
// it still read. Each bad block is logged once, with the file path and the
// block number. Names in the cipher directory that do not decrypt are
// hidden and logged once.
package cryptfs
