package cryptfs

import (
	"sync"
)

// reportOnce remembers what was already logged, so that a bad block the
// kernel asks for again and again, or an invalid name seen on every
// readdir, produces one log line. It forgets everything when full rather
// than growing without bound.
type reportOnce struct {
	mu   sync.Mutex
	seen map[reportKey]struct{}
}

type reportKey struct {
	kind  uint8
	ino   uint64
	block uint64
	name  string
}

const (
	reportBlock uint8 = iota + 1
	reportHeader
	reportName
	reportSize
	reportSymlink
	reportXattr
	reportHeaderID // a header whose file ID fits none of the blocks
)

const reportMax = 1 << 16

func (r *reportOnce) init() { r.seen = make(map[reportKey]struct{}) }

// known reports whether k was recorded, without recording it.
func (r *reportOnce) known(k reportKey) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.seen[k]
	return ok
}

// first reports whether k is new, and records it.
func (r *reportOnce) first(k reportKey) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.seen[k]; ok {
		return false
	}
	if len(r.seen) >= reportMax {
		clear(r.seen)
	}
	r.seen[k] = struct{}{}
	return true
}
