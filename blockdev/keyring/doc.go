// Package keyring hands a key to the kernel for the moment it takes to
// load a dm-crypt table, through a "logon" key on the thread keyring of a
// locked OS thread.
//
// Why this shape:
//   - A logon key can be used by the kernel but never read back from user
//     space (keyctl read fails with EOPNOTSUPP), unlike a "user" key.
//   - dm-crypt looks the key up with the keyrings of the thread that loads
//     the table. Go moves goroutines between OS threads, so the key is
//     added and the table loaded from one goroutine locked to its thread;
//     otherwise the load fails now and then with ENOKEY.
//   - The thread keyring is private to that thread: no other thread of
//     this process, and no other process, can find the key through it.
//   - The key is invalidated as soon as the table is loaded (dm-crypt keeps
//     its own copy), and the locked thread is left to exit with its
//     goroutine, which destroys the thread keyring as well.
package keyring
