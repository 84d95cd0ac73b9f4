package dm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Interface version this package speaks. The kernel refuses a request
// whose major differs or whose minor is newer than its own, so requests
// carry 4.0.0 and the kernel answers with its version, which is then
// checked against the minimum.
const (
	requiredMajor = 4
	// minMinor is interface 4.27 (Linux 3.13), which added
	// DM_DEFERRED_REMOVE; every kernel with dm-crypt keyring key
	// references (Linux 4.10) is newer.
	minMinor = 27
)

// Version is a device-mapper ioctl interface version.
type Version struct{ Major, Minor, Patch uint32 }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// check refuses interfaces this package cannot drive.
func (v Version) check() error {
	if v.Major != requiredMajor || v.Minor < minMinor {
		return fmt.Errorf("dm: kernel device-mapper ioctl interface is %s; need %d.x with x >= %d (Linux 3.13 or later)", v, requiredMajor, minMinor)
	}
	return nil
}

// queryVersion asks the kernel for its interface version (DM_VERSION).
func (c *Control) queryVersion() (Version, error) {
	h, _, err := c.do(request{cmd: unix.DM_VERSION})
	v := Version{h.Version[0], h.Version[1], h.Version[2]}
	if err != nil {
		// The kernel fills in its version even when it refuses ours.
		if errors.Is(err, unix.EINVAL) && v.Major != 0 {
			if cerr := v.check(); cerr != nil {
				return v, cerr
			}
		}
		return v, fmt.Errorf("dm: query interface version: %w", err)
	}
	return v, nil
}
