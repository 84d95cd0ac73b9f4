package luks2

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// Limits on ids. Keyslots and tokens are capped at 32 as in cryptsetup;
// segments and digests only need a sane bound.
const (
	MaxKeyslots = 32
	MaxTokens   = 32
	maxSegments = 1 << 16
	maxDigests  = 1 << 16
)

// metadata is the typed view of a header's JSON, parsed from the ordered
// tree (root) and rebuilt after every change, so the two never disagree.
type metadata struct {
	root     *object
	keyslots map[int]*keyslot
	tokens   map[int]*token
	segments map[int]*segment
	digests  map[int]*digest
	config   config
}

type keyslot struct {
	id       int
	typ      string
	keySize  int // volume key bytes
	priority int // 0 ignore, 1 normal, 2 prefer; 1 when absent
	// The rest is only filled for type "luks2".
	af   afParams
	area area
	kdf  KDF
	salt []byte
}

type afParams struct {
	typ     string
	stripes int
	hash    string
}

type area struct {
	typ        string
	offset     uint64
	size       uint64
	encryption string // raw areas only
	keySize    int    // raw areas only
}

type token struct {
	id       int
	typ      string
	keyslots []int
	raw      json.RawMessage
}

type segment struct {
	id         int
	typ        string
	offset     uint64
	size       uint64 // 0 with dynamic
	dynamic    bool
	ivTweak    uint64
	encryption string
	sectorSize int
	integrity  string
	flags      []string
}

type digest struct {
	id         int
	typ        string
	keyslots   []int
	segments   []int
	hash       string
	iterations int
	salt       []byte
	value      []byte
}

type config struct {
	jsonSize     uint64
	keyslotsSize uint64
	flags        []string
	requirements []string
}

// Top-level sections, in the order cryptsetup writes them.
var sections = []string{"keyslots", "tokens", "segments", "digests", "config"}

// parseMetadata parses the JSON text of a header into the typed view. It
// checks each section's own fields; cross-references and layout are
// checked by validate.
func parseMetadata(text []byte) (*metadata, error) {
	root, err := parseObject(text, "")
	if err != nil {
		return nil, err
	}
	return parseRoot(root)
}

func parseRoot(root *object) (*metadata, error) {
	m := &metadata{
		root:     root,
		keyslots: make(map[int]*keyslot),
		tokens:   make(map[int]*token),
		segments: make(map[int]*segment),
		digests:  make(map[int]*digest),
	}
	secs := make(map[string]*object)
	for _, name := range sections {
		o, err := root.obj("", name)
		if err != nil {
			return nil, err
		}
		secs[name] = o
	}
	for _, mb := range secs["keyslots"].members {
		id, err := parseID("keyslots", mb.key, MaxKeyslots)
		if err != nil {
			return nil, err
		}
		ks, err := parseKeyslot(id, mb.value)
		if err != nil {
			return nil, err
		}
		m.keyslots[id] = ks
	}
	for _, mb := range secs["tokens"].members {
		id, err := parseID("tokens", mb.key, MaxTokens)
		if err != nil {
			return nil, err
		}
		t, err := parseToken(id, mb.value, "tokens."+mb.key)
		if err != nil {
			return nil, err
		}
		m.tokens[id] = t
	}
	for _, mb := range secs["segments"].members {
		id, err := parseID("segments", mb.key, maxSegments)
		if err != nil {
			return nil, err
		}
		s, err := parseSegment(id, mb.value)
		if err != nil {
			return nil, err
		}
		m.segments[id] = s
	}
	for _, mb := range secs["digests"].members {
		id, err := parseID("digests", mb.key, maxDigests)
		if err != nil {
			return nil, err
		}
		d, err := parseDigest(id, mb.value)
		if err != nil {
			return nil, err
		}
		m.digests[id] = d
	}
	cfg, err := parseConfig(secs["config"])
	if err != nil {
		return nil, err
	}
	m.config = cfg
	return m, nil
}

func parseKeyslot(id int, raw json.RawMessage) (*keyslot, error) {
	path := fmt.Sprintf("keyslots.%d", id)
	o, err := parseObject(raw, path)
	if err != nil {
		return nil, err
	}
	ks := &keyslot{id: id, priority: 1}
	if ks.typ, err = o.str(path, "type"); err != nil {
		return nil, err
	}
	ks.keySize, err = intField(o, path, "key_size", 0, 1<<31-1)
	if err != nil {
		return nil, err
	}
	if o.has("priority") {
		if ks.priority, err = intField(o, path, "priority", 0, 2); err != nil {
			return nil, err
		}
	}
	// Every keyslot, whatever its type, owns a binary area that no other
	// keyslot may overlap.
	ao, err := o.obj(path, "area")
	if err != nil {
		return nil, err
	}
	apath := path + ".area"
	if ks.area.typ, err = ao.str(apath, "type"); err != nil {
		return nil, err
	}
	if ks.area.offset, err = ao.u64str(apath, "offset"); err != nil {
		return nil, err
	}
	if ks.area.size, err = ao.u64str(apath, "size"); err != nil {
		return nil, err
	}
	if ks.typ == "reencrypt" {
		return ks, checkReencryptKeyslot(o, ao, path, ks)
	}
	if ks.typ != "luks2" {
		// cryptsetup skips types it does not know; so does this package.
		return ks, nil
	}
	if ks.keySize == 0 {
		return nil, invalid(path+".key_size", "must not be zero")
	}
	if ks.area.typ != "raw" {
		return nil, invalid(apath+".type", "%q is not a luks2 keyslot area type (want \"raw\")", ks.area.typ)
	}
	if ks.area.encryption, err = ao.str(apath, "encryption"); err != nil {
		return nil, err
	}
	if ks.area.keySize, err = intField(ao, apath, "key_size", 1, 1024); err != nil {
		return nil, err
	}
	afo, err := o.obj(path, "af")
	if err != nil {
		return nil, err
	}
	afpath := path + ".af"
	if ks.af.typ, err = afo.str(afpath, "type"); err != nil {
		return nil, err
	}
	if ks.af.typ != "luks1" {
		return nil, invalid(afpath+".type", "%q is not a known anti-forensic splitter (want \"luks1\")", ks.af.typ)
	}
	if ks.af.hash, err = afo.str(afpath, "hash"); err != nil {
		return nil, err
	}
	if ks.af.stripes, err = intField(afo, afpath, "stripes", 1, 1<<31-1); err != nil {
		return nil, err
	}
	kdfo, err := o.obj(path, "kdf")
	if err != nil {
		return nil, err
	}
	if ks.kdf, ks.salt, err = parseKDF(kdfo, path+".kdf"); err != nil {
		return nil, err
	}
	return ks, nil
}

// checkReencryptKeyslot checks a keyslot of type "reencrypt", which
// records the progress of an online reencryption, as cryptsetup's
// reenc_keyslot_validate does. It is checked only so that a header
// cryptsetup refuses is refused too: this package does not reencrypt, and
// opens no header in the middle of a reencryption (see reencrypting).
func checkReencryptKeyslot(o, area *object, path string, ks *keyslot) error {
	if ks.keySize != 1 {
		return invalid(path+".key_size", "%d, want 1 for a reencrypt keyslot", ks.keySize)
	}
	mode, err := o.str(path, "mode")
	if err != nil {
		return err
	}
	if mode != "reencrypt" && mode != "encrypt" && mode != "decrypt" {
		return invalid(path+".mode", "%q is not reencrypt, encrypt or decrypt", mode)
	}
	direction, err := o.str(path, "direction")
	if err != nil {
		return err
	}
	if direction != "forward" && direction != "backward" {
		return invalid(path+".direction", "%q is not forward or backward", direction)
	}
	apath := path + ".area"
	switch ks.area.typ {
	case "checksum", "datashift-checksum":
		if _, err := area.str(apath, "hash"); err != nil {
			return err
		}
		n, err := area.integer(apath, "sector_size", 0, math.MaxUint32)
		if err != nil {
			return err
		}
		if n < sectorSize || n&(n-1) != 0 {
			return invalid(apath+".sector_size", "%d is not a power of two of at least %d", n, sectorSize)
		}
	case "datashift", "datashift-journal":
		n, err := area.u64str(apath, "shift_size")
		if err != nil {
			return err
		}
		if n == 0 || n%sectorSize != 0 {
			return invalid(apath+".shift_size", "%d is not a non-zero multiple of %d", n, sectorSize)
		}
	}
	return nil
}

func parseKDF(o *object, path string) (KDF, []byte, error) {
	var k KDF
	var err error
	if k.Type, err = o.str(path, "type"); err != nil {
		return k, nil, err
	}
	switch k.Type {
	case KDFPBKDF2:
		if k.Hash, err = o.str(path, "hash"); err != nil {
			return k, nil, err
		}
		if k.Iterations, err = o.uint32(path, "iterations"); err != nil {
			return k, nil, err
		}
	case KDFArgon2i, KDFArgon2id:
		if k.Time, err = o.uint32(path, "time"); err != nil {
			return k, nil, err
		}
		if k.MemoryKiB, err = o.uint32(path, "memory"); err != nil {
			return k, nil, err
		}
		if k.CPUs, err = o.uint32(path, "cpus"); err != nil {
			return k, nil, err
		}
	default:
		// cryptsetup's validator lets an unknown KDF through; opening such
		// a keyslot fails later with ErrUnsupported.
	}
	salt, err := base64Field(o, path, "salt")
	if err != nil {
		return k, nil, err
	}
	// Other members are allowed: cryptsetup's validator refuses them, but
	// its repair step, run before giving up, drops them from old headers.
	return k, salt, nil
}

func parseToken(id int, raw json.RawMessage, path string) (*token, error) {
	o, err := parseObject(raw, path)
	if err != nil {
		return nil, err
	}
	t := &token{id: id, raw: raw}
	if t.typ, err = o.str(path, "type"); err != nil {
		return nil, err
	}
	names, err := o.strArray(path, "keyslots")
	if err != nil {
		return nil, err
	}
	if t.keyslots, err = idList(path+".keyslots", names, MaxKeyslots); err != nil {
		return nil, err
	}
	// The one built-in token type cryptsetup checks itself.
	if t.typ == "luks2-keyring" {
		if _, err := o.str(path, "key_description"); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func parseSegment(id int, raw json.RawMessage) (*segment, error) {
	path := fmt.Sprintf("segments.%d", id)
	o, err := parseObject(raw, path)
	if err != nil {
		return nil, err
	}
	s := &segment{id: id}
	if s.typ, err = o.str(path, "type"); err != nil {
		return nil, err
	}
	if s.offset, err = o.u64str(path, "offset"); err != nil {
		return nil, err
	}
	size, err := o.str(path, "size")
	if err != nil {
		return nil, err
	}
	if size == "dynamic" {
		s.dynamic = true
	} else {
		if s.size, err = parseDecimal(size); err != nil {
			return nil, invalid(path+".size", "%v (want a decimal string or \"dynamic\")", err)
		}
		if s.size == 0 {
			return nil, invalid(path+".size", "must not be zero")
		}
	}
	if o.has("flags") {
		if s.flags, err = o.strArray(path, "flags"); err != nil {
			return nil, err
		}
	}
	if s.typ != "crypt" {
		return s, nil
	}
	if s.ivTweak, err = o.u64str(path, "iv_tweak"); err != nil {
		return nil, err
	}
	if s.encryption, err = o.str(path, "encryption"); err != nil {
		return nil, err
	}
	if s.sectorSize, err = intField(o, path, "sector_size", 0, 1<<32-1); err != nil {
		return nil, err
	}
	if o.has("integrity") {
		iobj, err := o.obj(path, "integrity")
		if err != nil {
			return nil, err
		}
		ipath := path + ".integrity"
		if s.integrity, err = iobj.str(ipath, "type"); err != nil {
			return nil, err
		}
		for _, k := range []string{"journal_encryption", "journal_integrity"} {
			if _, err := iobj.str(ipath, k); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// backup reports whether a segment is one of the backup segments that
// reencryption keeps after the regular ones.
func (s *segment) backup() bool {
	for _, f := range s.flags {
		if strings.HasPrefix(f, "backup-") {
			return true
		}
	}
	return false
}

func parseDigest(id int, raw json.RawMessage) (*digest, error) {
	path := fmt.Sprintf("digests.%d", id)
	o, err := parseObject(raw, path)
	if err != nil {
		return nil, err
	}
	d := &digest{id: id}
	if d.typ, err = o.str(path, "type"); err != nil {
		return nil, err
	}
	names, err := o.strArray(path, "keyslots")
	if err != nil {
		return nil, err
	}
	if d.keyslots, err = idList(path+".keyslots", names, MaxKeyslots); err != nil {
		return nil, err
	}
	if names, err = o.strArray(path, "segments"); err != nil {
		return nil, err
	}
	if d.segments, err = idList(path+".segments", names, maxSegments); err != nil {
		return nil, err
	}
	if d.typ != "pbkdf2" {
		return d, nil
	}
	if d.hash, err = o.str(path, "hash"); err != nil {
		return nil, err
	}
	if _, err := hashByName(d.hash); err != nil {
		return nil, invalid(path+".hash", "%v", err)
	}
	if d.iterations, err = intField(o, path, "iterations", 1, 1<<32-1); err != nil {
		return nil, err
	}
	if d.salt, err = base64Field(o, path, "salt"); err != nil {
		return nil, err
	}
	if len(d.salt) != saltSize {
		return nil, invalid(path+".salt", "is %d bytes, want %d", len(d.salt), saltSize)
	}
	if d.value, err = base64Field(o, path, "digest"); err != nil {
		return nil, err
	}
	h, _ := hashByName(d.hash)
	// LUKS1-converted headers carry 20-byte digests; native ones the
	// hash's full size.
	if n := len(d.value); n != 20 && n != h().Size() {
		return nil, invalid(path+".digest", "is %d bytes, want 20 or %d", n, h().Size())
	}
	return d, nil
}

func parseConfig(o *object) (config, error) {
	var c config
	var err error
	if c.jsonSize, err = o.u64str("config", "json_size"); err != nil {
		return c, err
	}
	if c.keyslotsSize, err = o.u64str("config", "keyslots_size"); err != nil {
		return c, err
	}
	if o.has("flags") {
		if c.flags, err = o.strArray("config", "flags"); err != nil {
			return c, err
		}
	}
	if o.has("requirements") {
		ro, err := o.obj("config", "requirements")
		if err != nil {
			return c, err
		}
		if ro.has("mandatory") {
			if c.requirements, err = ro.strArray("config.requirements", "mandatory"); err != nil {
				return c, err
			}
		}
	}
	return c, nil
}

func intField(o *object, path, key string, lo, hi int64) (int, error) {
	v, err := o.integer(path, key, lo, hi)
	return int(v), err
}

func base64Field(o *object, path, key string) ([]byte, error) {
	s, err := o.str(path, key)
	if err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, invalid(joinPath(path, key), "not base64: %v", err)
	}
	return b, nil
}

// digestOf returns the digest a keyslot is assigned to.
func (m *metadata) digestOf(slot int) (*digest, bool) {
	for _, id := range sortedKeys(m.digests) {
		d := m.digests[id]
		for _, k := range d.keyslots {
			if k == slot {
				return d, true
			}
		}
	}
	return nil, false
}

// dataSegment is the segment whose key opens the volume, as cryptsetup's
// default segment outside a reencryption.
const dataSegment = 0

// bound reports whether a keyslot holds the volume key: its digest is
// assigned to the data segment. An unbound keyslot (cryptsetup
// luksAddKey --unbound) keeps a key of its own, which must never be
// taken for the volume key.
func (m *metadata) bound(slot int) bool {
	d, ok := m.digestOf(slot)
	return ok && slices.Contains(d.segments, dataSegment)
}

func sortedKeys[V any](m map[int]V) []int {
	ids := make([]int, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

// section returns a top-level section as an ordered object to edit.
func (m *metadata) section(name string) (*object, error) {
	raw, _ := m.root.get(name)
	return parseObject(raw, name)
}
