package volume

import (
	"fmt"

	"kmsagent/blockdev/probe"
)

// ExistingDataError is Format's refusal of a device that already holds
// something: a LUKS header, a file system, a RAID or LVM member, a
// partition table.
type ExistingDataError struct {
	Found []probe.Signature
}

func (e *ExistingDataError) Error() string {
	return fmt.Sprintf("the device holds %s; formatting destroys it", probe.Names(withoutSecondary(e.Found)))
}

// AmbiguousError is the refusal to write a LUKS2 header on a device that
// holds something besides a LUKS2 header (an LVM2 label, a file system,
// a RAID superblock), or whose primary header is of a version kmsagent
// does not write (a LUKS1 header beside a stale LUKS2 copy). luks2 would
// read the valid LUKS2 copy and rewrite both copies, destroying the
// other format, though the device may well be in use as that format.
// Which one is live only the admin can tell, so kmsagent does not guess:
// blkid's rule for two file systems on one device ("ambivalent result"),
// applied to header writes.
type AmbiguousError struct {
	Found []probe.Signature
}

func (e *AmbiguousError) Error() string {
	var luks, other []probe.Signature
	for _, s := range e.Found {
		if s.Type == probe.TypeLUKS && s.Version == 2 {
			luks = append(luks, s)
		} else {
			other = append(other, s)
		}
	}
	return fmt.Sprintf("ambiguous device: besides %s it holds %s, which writing the LUKS2 header would destroy",
		probe.Names(withoutSecondary(luks)), probe.Names(other))
}

// withoutSecondary drops LUKS2 secondary copies when their primary is
// listed: one LUKS2 header is one thing to the reader.
func withoutSecondary(sigs []probe.Signature) []probe.Signature {
	primary := false
	for _, s := range sigs {
		primary = primary || (s.Type == probe.TypeLUKS && s.Version == 2 && !s.Secondary)
	}
	var out []probe.Signature
	for _, s := range sigs {
		if !(primary && s.Secondary) {
			out = append(out, s)
		}
	}
	return out
}

// scan probes dev for signatures; the size is only needed for the
// signatures at the end of a device, so an unknown size is no error.
func scan(dev Device) ([]probe.Signature, error) {
	size, err := deviceSize(dev)
	if err != nil {
		size = -1
	}
	sigs, err := probe.Scan(dev, size)
	if err != nil {
		return nil, fmt.Errorf("probe for existing data: %w", err)
	}
	return sigs, nil
}

// checkFormat probes a device about to be formatted: it refuses one that
// holds any signature unless force is set, and returns what it found.
func checkFormat(dev Device, force bool) ([]probe.Signature, error) {
	sigs, err := scan(dev)
	if err != nil {
		return nil, err
	}
	if len(sigs) > 0 && !force {
		return nil, &ExistingDataError{Found: sigs}
	}
	return sigs, nil
}

// wipeStale erases, after a forced format, the signatures the new header
// did not overwrite: those in the data area, from dataOffset on (an MD
// RAID 1.0 superblock or ZFS labels at the end of the device). Left
// there, they would make the new volume ambiguous, and the next enroll
// or rewrap would refuse it. cryptsetup luksFormat wipes them too.
func wipeStale(dev Device, sigs []probe.Signature, dataOffset int64) error {
	wiped := false
	for _, s := range sigs {
		if s.Offset < dataOffset {
			continue // zeroed or overwritten by the header and keyslot area
		}
		if _, err := dev.WriteAt(make([]byte, s.Len), s.Offset); err != nil {
			return fmt.Errorf("erase %s: %w", s, err)
		}
		wiped = true
	}
	if wiped {
		return dev.Sync()
	}
	return nil
}

// checkOnlyLUKS2 refuses to change the LUKS2 header of a device that
// holds anything besides LUKS2 header copies. A device without any LUKS
// signature passes: reading its header then fails with the plain "not a
// LUKS2 volume".
func checkOnlyLUKS2(dev Device) error {
	sigs, err := scan(dev)
	if err != nil {
		return err
	}
	luks, ambiguous := false, false
	for _, s := range sigs {
		if s.Type == probe.TypeLUKS {
			luks = true
		}
		if s.Type != probe.TypeLUKS || s.Version != 2 {
			ambiguous = true
		}
	}
	if luks && ambiguous {
		return &AmbiguousError{Found: sigs}
	}
	return nil
}

// LUKSVersion is the version of a LUKS header found that kmsagent does
// not write (1 for a LUKS1 volume, which cryptsetup can convert), or 0.
func (e *AmbiguousError) LUKSVersion() int {
	for _, s := range e.Found {
		if s.Type == probe.TypeLUKS && s.Version != 2 {
			return s.Version
		}
	}
	return 0
}
