// Package cryptkey serves the keyslot passphrases of kmsagent LUKS2
// volumes to stock systemd-cryptsetup, so that a crypttab line such as
//
//	data  UUID=<LUKS UUID>  /run/kmsagent/cryptsetup.sock  luks,_netdev,headless=true
//
// unlocks the volume at boot with no kmsagent code in the unlock path:
// the key file named on the line is an AF_UNIX stream socket served by
// the daemon (kmsagent.socket makes it). _netdev puts the unit after
// kmsagent.service (which is ordered before remote-fs-pre.target);
// without it the unit runs in early boot, before kmsagent.socket (after
// sysinit.target) has made the socket, and falls back to asking for a
// passphrase (not tried in the boot test). headless=true turns a missing key into a failure instead of a
// passphrase prompt. packaging/boottest boots both kinds: a volume that
// unlocks, and one whose CMK is disabled and that fails alone (nofail).
//
// # What systemd-cryptsetup does (systemd src/cryptsetup/cryptsetup.c,
// src/basic/fileio.c)
//
// For a key file it calls read_full_file_full with
// READ_FULL_FILE_CONNECT_SOCKET. Opening a socket node fails with ENXIO;
// it then makes an AF_UNIX stream socket, binds it to the abstract
// address "@<random hex>/cryptsetup/<volume>" (make_bindname; "@" is the
// leading NUL), connects to the path, shuts down its writing side and
// reads until EOF. Whatever it read is the passphrase, byte for byte:
// no newline is stripped (unlike a typed passphrase), and binary is
// fine. The server learns the volume from getpeername, and who is asking
// from SO_PEERCRED; it never reads from the client.
//
// So the server writes the passphrase of the volume's kmsagent keyslot
// (the base64 text of the KMS data key, token.Passphrase: 44 bytes, no
// newline) once and closes the connection. Errors are logged and
// audited, and the connection is closed without a byte written. What
// the client does then, as systemd's source reads (main branch; the
// socket support dates from v248, Debian 12 has v252; the boot test
// under systemd as PID 1 is what confirms it):
//
//   - An empty read is a successful read of an empty key: activation
//     with an empty passphrase fails with EPERM, which systemd-cryptsetup
//     treats as a wrong key and, on its next try (tries=, default 3),
//     asks for a passphrase (the recovery keyslot) through the password
//     agents, or fails at once with headless. The empty attempt uses up
//     one try.
//   - A socket path that does not exist (ENOENT) also falls back to
//     asking. But a socket node with nobody listening gives ECONNREFUSED,
//     and any error other than ENOENT and E2BIG fails the unit without
//     asking: the socket must be served (by the daemon, or by a socket
//     unit that queues the connection until the daemon runs) whenever
//     the node exists.
//   - keyfile-offset= must not be set: with an offset systemd does not
//     try to connect at all (sockets cannot seek), opening the socket
//     fails with ENXIO and the unit fails. keyfile-size= reads at most
//     that many bytes; below 44 it cuts the passphrase short and the
//     key is wrong, so leave it unset.
//   - systemd-cryptsetup does not time out while reading; Server.Timeout
//     bounds a request on this side (a KMS call with its retries).
//
// Ordering at boot is the unit files' business: the generator orders
// systemd-cryptsetup@<volume>.service after the encrypted device and
// RequiresMountsFor= the key file's path, not after the daemon. A
// volume whose KMS is on the network needs _netdev (remote-cryptsetup.
// target, after network-online.target), and the socket must exist by
// then.
//
// # Who gets a key
//
// Only uid 0, checked from SO_PEERCRED before the volume is looked at;
// the socket is also 0600 in a directory only root can enter (Listen),
// so the check is a second line. The volume name must come from an
// address of systemd-cryptsetup's form (VolumeFromPeer) and be one the
// Lookup knows: by default the name's line in /etc/crypttab (Crypttab),
// whose device field is resolved like the generator does. The device's
// LUKS2 header must carry a kmsagent token bound to its UUID; the key is
// unwrapped by the KMS (Keyer) for each request and nothing is cached.
// Any root process can thus get any crypttab volume's key, which it
// could get anyway by asking the KMS with the daemon's credential: the
// boundary is the KMS credential (see the README's security model).
//
// # Audit
//
// Every request that reaches the server gets one audit record (op
// crypttab-key, the peer's uid, pid, command and unit, the volume name,
// the CMK): after the KMS call and before the key is written, as package
// audit requires. A record that cannot be written withholds the key
// unless the Log fails open. Refusals are recorded too, with the error
// kind (key_disabled, error, ...).
//
// # Key material
//
// The passphrase is in a secret.Key (locked, not dumped) from the unwrap
// to the write, and wiped after it; it is never logged. That is the
// Keyer path, where the key passes through this process. A daemon keeps
// key material out of its own address space with a Deliverer instead:
// kmsagent run hands each accepted connection to a short-lived worker
// (service.Service.DeliverKey), which unwraps the key, names the CMK,
// waits for the audit record to be written (the approve callback), and
// writes the key to the connection itself.
//
// # Limits
//
// At most MaxConns requests are served at once (further clients wait in
// the listen backlog, which is what a boot with many volumes needs), each
// bounded by Timeout, and the key write by a short deadline.
package cryptkey
