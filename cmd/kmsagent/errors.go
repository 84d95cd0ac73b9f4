package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"kmsagent/agent/service"
	"kmsagent/blockdev/crypt"
	"kmsagent/blockdev/partition"
	"kmsagent/blockdev/volume"
	"kmsagent/fuse/cryptfs"
	"kmsagent/fuse/envelope"
	"kmsagent/fuse/share"
	"kmsagent/kmsclient"
)

// The libraries return typed errors that say what is wrong; what an
// admin at this command line can do about it (a flag, another command)
// is added here, where the flags are known.

// advise adds the command-line advice for err, which the command args
// (the words after kmsagent and its flags) returned, keeping it matchable
// with errors.Is and errors.As (a usage error stays one, and exits 2).
func advise(args []string, err error) error {
	if err == nil {
		return nil
	}
	err = adviseKMS(err)
	var optErr *service.OptionError
	var notMounted *service.NotMountedError
	var srcErr *service.SourceError
	var notShare *envelope.NotShareError
	var mounted *share.MountedError
	var alreadyOpen *crypt.AlreadyOpenError
	var noRoom *partition.NoRoomError
	switch {
	case errors.As(err, &noRoom):
		return fmt.Errorf("%w; shrink its file system and then the partition by at least %d bytes, leaving that much unallocated space after it (resize2fs, then sfdisk), or make it the last partition on the disk", err, noRoom.Grow-noRoom.Free)
	case errors.As(err, &notShare):
		return fmt.Errorf("%w; run kmsagent format fuse %s --key-id ID", err, notShare.Dir)
	case errors.As(err, new(*envelope.ExistsError)):
		return fmt.Errorf("%w; pass --force to replace it (the old wrapped key is lost)", err)
	case errors.As(err, new(*share.HeldError)):
		return fmt.Errorf("%w; unmount it first with kmsagent umount", err)
	case errors.As(err, &mounted):
		return fmt.Errorf("%w; run kmsagent umount %s first", err, mounted.Path)
	case errors.As(err, new(*share.BusyError)):
		return fmt.Errorf("%w, or use kmsagent umount --lazy", err)
	case errors.As(err, new(*share.NotGocryptfsError)):
		return fmt.Errorf("%w; run kmsagent format fuse without --import-master-key-file for a new share", err)
	case errors.As(err, new(*share.HasShareError)):
		return fmt.Errorf("%w; pass --force to replace the envelope (the old one is kept as a backup)", err)
	case errors.As(err, new(*share.NotEmptyError)):
		return fmt.Errorf("%w, or pass --force to format it anyway (nothing in it is overwritten)", err)
	case errors.As(err, &optErr):
		return &usageError{fmt.Sprintf("mount: unknown option -o %s; known: %s", optErr.Option, strings.Join(optErr.Known, ", "))}
	case errors.As(err, &notMounted):
		return fmt.Errorf("%w (see kmsagent status)", err)
	case errors.Is(err, cryptfs.ErrKeyUnverified):
		return fmt.Errorf("%w; if you are sure the key is this tree's, pass --force", err)
	case errors.Is(err, volume.ErrNotEnrolled) && slices.Contains(args, "rewrap"):
		return fmt.Errorf("%w; bind it with kmsagent enroll first", err)
	case errors.Is(err, volume.ErrNotEnrolled):
		return fmt.Errorf("%w; bind it with kmsagent enroll, or open it with a passphrase", err)
	case errors.Is(err, volume.ErrWrongVolume):
		return fmt.Errorf("%w; re-enroll with kmsagent enroll", err)
	case errors.As(err, new(*volume.AlignmentError)):
		return fmt.Errorf("%w; use --sector-size 512", err)
	case errors.As(err, new(*volume.EnrolledError)):
		return fmt.Errorf("%w; use kmsagent rewrap to change the KMS key, or kmsagent unenroll first", err)
	case errors.As(err, new(*volume.LastKeyslotError)):
		return fmt.Errorf("%w (cryptsetup luksAddKey, or kmsagent export-key and cryptsetup luksAddKey --volume-key-file)", err)
	case errors.As(err, &alreadyOpen):
		return fmt.Errorf("%w (close it with kmsagent umount %s)", err, alreadyOpen.Name)
	case errors.As(err, new(*crypt.NameTakenError)):
		return fmt.Errorf("%w; choose another --name", err)
	case errors.As(err, new(*crypt.OpeningError)):
		return fmt.Errorf("%w; wait for it and check kmsagent status", err)
	case errors.As(err, new(*crypt.UnknownFSError)):
		return fmt.Errorf("%w; give --fs-type to try anyway", err)
	case errors.As(err, new(*crypt.UnmountError)):
		return fmt.Errorf("%w (close what uses it, or use --lazy)", err)
	case errors.As(err, &srcErr):
		return deviceAdvice(srcErr.Source, err)
	}
	return err
}

// adviseKMS names the kmsagent kms command that fixes a key the KMS
// refused, after the library's hint.
func adviseKMS(err error) error {
	for _, a := range []struct {
		kind error
		how  string
	}{
		{kmsclient.ErrKeyNotFound, "kmsagent kms list-keys"},
		{kmsclient.ErrKeyDisabled, "kmsagent kms enable-key"},
		{kmsclient.ErrKeyPendingDeletion, "kmsagent kms cancel-deletion"},
	} {
		if errors.Is(err, a.kind) {
			return fmt.Errorf("%w (%s, or the provider's console)", err, a.how)
		}
	}
	return err
}

// deviceAdvice adds what the admin can do about a device kmsagent
// refused to write to.
func deviceAdvice(path string, err error) error {
	var existing *volume.ExistingDataError
	var ambiguous *volume.AmbiguousError
	switch {
	case errors.As(err, &existing):
		return fmt.Errorf("%w; pass --force if that is intended", err)
	case errors.As(err, &ambiguous) && ambiguous.LUKSVersion() == 1:
		return fmt.Errorf("%w; kmsagent writes only LUKS2: if the LUKS1 volume is in use, convert it first (cryptsetup convert --type luks2 %s), if it is stale, erase it (wipefs --offset 0x0 %s)", err, path, path)
	case errors.As(err, &ambiguous):
		return fmt.Errorf("%w; find out which is in use (wipefs %s lists the signatures without erasing any), then erase the stale ones with wipefs --offset OFFSET %s", err, path, path)
	}
	return err
}
