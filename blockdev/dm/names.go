package dm

import (
	"fmt"
	"strings"
)

// MaxNameLen is the longest device name: DM_NAME_LEN less the NUL.
const MaxNameLen = nameLen - 1

// MaxUUIDLen is the longest device uuid: DM_UUID_LEN less the NUL.
const MaxUUIDLen = uuidLen - 1

// ValidateName checks a device name. The kernel refuses '/' and the names
// "." and ".." (they would become paths under /dev/mapper); this package
// also refuses what would break a table or a command line: a leading '-'
// (read as an option by dmsetup and cryptsetup), "control" (the control
// node's name), and anything but printable ASCII without blanks, because
// the name also ends up in the keyring reference inside the
// blank-separated crypt table.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("dm: device name is empty")
	case len(name) > MaxNameLen:
		return fmt.Errorf("dm: device name of %d bytes is longer than %d", len(name), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("dm: device name %q is not allowed", name)
	case name == "control":
		return fmt.Errorf("dm: device name %q is the control node's", name)
	case name[0] == '-':
		return fmt.Errorf("dm: device name %q starts with '-'", name)
	case strings.Contains(name, "/"):
		return fmt.Errorf("dm: device name %q contains '/'", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("dm: device name %q has a blank or non-printable byte %#02x at %d", name, c, i)
		}
	}
	return nil
}

// validateUUID checks a device uuid: empty (none) or printable ASCII
// without blanks that fits DM_UUID_LEN.
func validateUUID(uuid string) error {
	if len(uuid) > MaxUUIDLen {
		return fmt.Errorf("dm: device uuid of %d bytes is longer than %d", len(uuid), MaxUUIDLen)
	}
	for i := 0; i < len(uuid); i++ {
		if c := uuid[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("dm: device uuid %q has a blank or non-printable byte %#02x at %d", uuid, c, i)
		}
	}
	return nil
}

// CryptUUID returns the device-mapper uuid cryptsetup gives an open LUKS2
// volume, "CRYPT-LUKS2-<luks uuid without dashes>-<name>", so that
// cryptsetup status, systemd and lsblk recognise the device as a LUKS2
// mapping of that volume.
func CryptUUID(luksUUID, name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	hex, err := compactUUID(luksUUID)
	if err != nil {
		return "", err
	}
	u := "CRYPT-LUKS2-" + hex + "-" + name
	if len(u) > MaxUUIDLen {
		return "", fmt.Errorf("dm: device uuid for name %q is %d bytes, longer than %d; use a name of at most %d bytes", name, len(u), MaxUUIDLen, MaxUUIDLen-(len(u)-len(name)))
	}
	return u, nil
}

// compactUUID drops the dashes of a canonical 8-4-4-4-12 uuid, keeping
// the case of the digits as cryptsetup does for the device-mapper uuid.
func compactUUID(u string) (string, error) {
	if len(u) != 36 || u[8] != '-' || u[13] != '-' || u[18] != '-' || u[23] != '-' {
		return "", fmt.Errorf("dm: LUKS uuid %q is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", u)
	}
	var b strings.Builder
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			continue
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("dm: LUKS uuid %q has a non-hex character at %d", u, i)
		}
	}
	return b.String(), nil
}
