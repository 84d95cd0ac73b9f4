package cryptkey

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNotCryptsetup means the client did not bind the abstract address
// systemd-cryptsetup binds, so it names no volume.
var ErrNotCryptsetup = errors.New("peer address is not systemd-cryptsetup's")

// maxPeerAddr is the longest abstract name a sockaddr_un holds (108
// bytes of sun_path less the leading NUL), and so the longest name the
// kernel can report.
const maxPeerAddr = 107

// VolumeFromPeer returns the volume name in the abstract socket address
// systemd-cryptsetup binds before it connects: "@<hex>/cryptsetup/<volume>",
// where <hex> is a random 64-bit number in lower-case hex (make_bindname
// in src/cryptsetup/cryptsetup.c) and "@" stands for the leading NUL, as
// Go reports abstract addresses. The name must be one systemd-cryptsetup
// accepts. Other systemd clients of key sockets (LoadCredential= binds
// "@<hex>/unit/<unit>/<id>") are refused.
func VolumeFromPeer(addr string) (string, error) {
	if len(addr) > maxPeerAddr+1 {
		return "", fmt.Errorf("%w: %d bytes long", ErrNotCryptsetup, len(addr))
	}
	rest, ok := strings.CutPrefix(addr, "@")
	if !ok {
		return "", fmt.Errorf("%w: not an abstract address", ErrNotCryptsetup)
	}
	random, name, ok := strings.Cut(rest, "/cryptsetup/")
	if !ok || random == "" || len(random) > 16 || strings.Trim(random, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%w: want @<hex>/cryptsetup/<volume>", ErrNotCryptsetup)
	}
	if err := checkName(name); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotCryptsetup, err)
	}
	return name, nil
}
