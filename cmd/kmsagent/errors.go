package main

import (
	"errors"
	"fmt"
	"strings"

	"kmsagent/agent/service"
	"kmsagent/blockdev/volume"
	"kmsagent/fuse/cryptfs"
)

// The libraries return typed errors that say what is wrong; what an
// admin at this command line can do about it (a flag, another command)
// is added here, where the flags are known.

// advise adds the command-line advice for err, keeping it matchable with
// errors.Is and errors.As (a usage error stays one, and exits 2).
func advise(err error) error {
	if err == nil {
		return nil
	}
	var optErr *service.OptionError
	var notMounted *service.NotMountedError
	var srcErr *service.SourceError
	switch {
	case errors.As(err, &optErr):
		return &usageError{fmt.Sprintf("mount: unknown option -o %s; known: %s", optErr.Option, strings.Join(optErr.Known, ", "))}
	case errors.As(err, &notMounted):
		return fmt.Errorf("%w (see kmsagent status)", err)
	case errors.Is(err, cryptfs.ErrKeyUnverified):
		return fmt.Errorf("%w; if you are sure the key is this tree's, pass --force", err)
	case errors.As(err, &srcErr):
		return deviceAdvice(srcErr.Source, err)
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
