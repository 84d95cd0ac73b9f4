package kmsserver

import (
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"kmsagent/kmsclient/huaweicloud/signer"
)

// replayKey is the first half of a signature: 128 bits of an HMAC output
// tell requests apart as well as all 256, in half the memory.
type replayKey [16]byte

// replayCache remembers the signatures of accepted requests until their
// X-Sdk-Date leaves the accepted skew window, after which the verifier
// refuses them anyway. Signatures are kept in buckets by the minute they
// expire in, so expiry drops whole maps; the total is capped, and a full
// cache refuses new requests (the caller answers 429) rather than
// forgetting signatures that could then be replayed.
type replayCache struct {
	mu      sync.Mutex
	max     int
	n       int
	buckets map[int64]map[replayKey]struct{} // expiry minute → keys
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, buckets: make(map[int64]map[replayKey]struct{})}
}

type replayResult int

const (
	replayAdded replayResult = iota
	replaySeen
	replayFull
)

// bucketOf rounds up, so a key is dropped only after it expires.
func bucketOf(t time.Time) int64 {
	return (t.Unix() + 59) / 60
}

// expire drops the buckets whose every key has expired at now.
func (c *replayCache) expire(now time.Time) {
	cur := now.Unix() / 60
	for b, keys := range c.buckets {
		if b <= cur {
			c.n -= len(keys)
			delete(c.buckets, b)
		}
	}
}

func (c *replayCache) seen(k replayKey, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
	return c.has(k)
}

func (c *replayCache) has(k replayKey) bool {
	for _, keys := range c.buckets {
		if _, ok := keys[k]; ok {
			return true
		}
	}
	return false
}

// add records k until expires unless it is already there or the cache is
// full.
func (c *replayCache) add(k replayKey, expires, now time.Time) replayResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
	if c.has(k) {
		return replaySeen
	}
	if c.n >= c.max {
		return replayFull
	}
	b := bucketOf(expires)
	keys := c.buckets[b]
	if keys == nil {
		keys = make(map[replayKey]struct{})
		c.buckets[b] = keys
	}
	keys[k] = struct{}{}
	c.n++
	return replayAdded
}

// forget removes k, recorded with expires.
func (c *replayCache) forget(k replayKey, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := bucketOf(expires)
	if keys := c.buckets[b]; keys != nil {
		if _, ok := keys[k]; ok {
			delete(keys, k)
			c.n--
		}
	}
}

var errNoSignature = errors.New("no signature in the Authorization header")

// signatureOf reads the signature and X-Sdk-Date of a request the
// verifier has accepted.
func signatureOf(r *http.Request) (replayKey, time.Time, error) {
	var k replayKey
	var sig string
	for part := range strings.SplitSeq(r.Header.Get("Authorization"), ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(part), "Signature="); ok {
			sig = v
		}
	}
	raw, err := hex.DecodeString(sig)
	if err != nil || len(raw) < len(k) {
		return k, time.Time{}, errNoSignature
	}
	copy(k[:], raw)
	date, err := time.Parse(signer.DateFormat, r.Header.Get(signer.HeaderDate))
	if err != nil {
		return k, time.Time{}, signer.ErrBadDate
	}
	return k, date, nil
}
