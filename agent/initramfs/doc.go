// Package initramfs unlocks a LUKS2 root volume in early boot through the
// KMS, and decides what of kmsagent's configuration may go into the
// initramfs that does it.
//
// The initramfs lives on the unencrypted /boot (or the ESP): anyone who
// can read the disk image, a snapshot or a copied image can read it. So
// it must hold nothing that lets its reader call the KMS. The rule is
// that only credential sources that store no secret are allowed:
//
//   - huaweicloud with credentials = "metadata": the ECS agency's
//     temporary credentials come from the instance metadata service,
//     which answers only on that instance;
//   - aws: the EC2 instance role through IMDS, and nothing else from the
//     SDK's default chain (environment, shared credential files).
//
// Refused: the embedded local KMS (its key store is the master key
// itself), static AK/SK (secret_key_file), a TLS client key (key_file),
// and any file copied along (ca_file) that holds a private key. Plan
// refuses these with an error naming the setting, and the initramfs-tools
// hook fails the build on that error instead of writing an initramfs
// that would carry a secret.
//
// What goes in is the [kms] table alone, rewritten from the parsed
// configuration (so comments, [agent], [[volume]] and [kms.serve] with
// its client secrets never reach the initramfs), and the public files it
// names.
//
// Unlock is the keyscript's loop: it reads the volume's kmsagent token,
// asks the KMS for the data key and gives cryptsetup the keyslot's
// passphrase. While the KMS or the metadata service cannot be reached it
// retries with backoff forever, saying so on the console each round: an
// instance without its root volume has nothing better to do, and a
// network that comes up late must not need a person. A person who is
// there need not wait, though: after the first round that fails, the
// keyscript also asks for the recovery passphrase on the console (if the
// volume has a recovery keyslot), and whichever answers first unlocks. A refusal that
// retrying cannot fix (the CMK disabled, pending deletion or gone, access
// denied, a token bound to another volume) stops at once with a message
// naming the key; if the volume has a recovery passphrase keyslot the
// keyscript then asks for it on the console.
package initramfs
