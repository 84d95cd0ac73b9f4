package volume

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/probe"
	"kmsagent/blockdev/token"
	"kmsagent/kmsclient"
)

// CreateOptions are the parameters of a new LUKS2 header with a KMS
// keyslot.
type CreateOptions struct {
	KeyID  string // KMS key that wraps the data key
	Region string // recorded in the token; empty when the provider has none
	// SectorSize is the encryption sector size, 512 or 4096 (default).
	SectorSize int
	// RecoveryPassphrase, when set, gets a keyslot of its own: the admin's
	// way in with stock cryptsetup when the KMS is gone. Used as exact
	// bytes, like cryptsetup's --key-file.
	RecoveryPassphrase []byte
	// RecoveryKDF is the recovery keyslot's KDF; zero means
	// DefaultRecoveryKDF.
	RecoveryKDF luks2.KDF
	// Label is the LUKS label (at most 47 bytes), shown by blkid.
	Label string
}

// FormatOptions are CreateOptions plus what only a device needs.
type FormatOptions struct {
	CreateOptions
	// Force formats a device that holds a LUKS header or a file system.
	Force bool
}

// Result reports what Format, Create or Enroll made.
type Result struct {
	UUID            string
	KeyID           string // the KMS key as the provider names it
	Keyslot         int    // the KMS keyslot
	TokenID         int
	RecoveryKeyslot int // -1 without a recovery passphrase
}

// DefaultSectorSize is the encryption sector size of new volumes: 4096,
// as cryptsetup picks on current disks, since it cuts the per-sector
// work of dm-crypt eightfold.
const DefaultSectorSize = 4096

// volumeKeyDigestIterations is the pbkdf2 count of the volume key digest;
// see Create.
const volumeKeyDigestIterations = 1000

// DefaultRecoveryKDF is argon2id as cryptsetup sets it up on a fast
// machine: 4 passes over 1 GiB (at most half the RAM) with up to 4
// lanes. A recovery passphrase is chosen by a person, so it is stretched
// as much as an unlock by hand can bear.
func DefaultRecoveryKDF() luks2.KDF {
	mem := uint32(1 << 20) // KiB
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		if half := uint64(si.Totalram) * uint64(si.Unit) / 2 / 1024; half < uint64(mem) {
			mem = uint32(max(half, 32<<10))
		}
	}
	return luks2.KDF{Type: luks2.KDFArgon2id, Time: 4, MemoryKiB: mem, CPUs: uint32(min(4, runtime.NumCPU()))}
}

// Create makes a new header in memory for dev, with a random 512-bit
// volume key for aes-xts-plain64, a KMS keyslot with its token and an
// optional recovery keyslot. The KMS is asked first; then the metadata
// area of dev is wiped and the keyslot areas written, but the header is
// not: the caller adds what else it needs and commits with Write. The
// caller wipes the returned volume key.
func Create(ctx context.Context, dev luks2.WriterAtSyncer, kms kmsclient.KMS, o CreateOptions) (*luks2.Header, *secret.Key, *Result, error) {
	if o.KeyID == "" {
		return nil, nil, nil, errors.New("no KMS key id given")
	}
	if o.SectorSize == 0 {
		o.SectorSize = DefaultSectorSize
	}
	if o.SectorSize != 512 && o.SectorSize != 4096 {
		return nil, nil, nil, fmt.Errorf("sector size %d is not supported; use 512 or 4096", o.SectorSize)
	}
	recoveryKDF := o.RecoveryKDF
	if recoveryKDF == (luks2.KDF{}) {
		recoveryKDF = DefaultRecoveryKDF()
	}
	// The digest only checks a candidate volume key, and ours are 512
	// random bits that no iteration count makes easier or harder to
	// guess; cryptsetup's minimum keeps every unlock (and a boot that
	// unlocks many volumes at once) from paying a slow KDF twice.
	h, vk, err := luks2.Format(luks2.FormatOptions{SectorSize: o.SectorSize, Label: o.Label, DigestIterations: volumeKeyDigestIterations})
	if err != nil {
		return nil, nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			vk.Wipe()
		}
	}()
	dk, err := kms.GenerateDataKey(ctx, o.KeyID, token.DataKeySize, h.UUID())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate data key under KMS key %s: %w", o.KeyID, err)
	}
	defer dk.Wipe()
	if err := h.WipeKeyslotsArea(dev); err != nil {
		return nil, nil, nil, err
	}
	res, err := addKMSKeyslot(h, dev, vk, kms.Provider(), o.Region, dk)
	if err != nil {
		return nil, nil, nil, err
	}
	res.RecoveryKeyslot = -1
	if len(o.RecoveryPassphrase) > 0 {
		slot, err := h.AddKeyslot(dev, vk, o.RecoveryPassphrase, recoveryKDF)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("recovery keyslot: %w", err)
		}
		res.RecoveryKeyslot = slot
	}
	ok = true
	return h, vk, res, nil
}

// addKMSKeyslot adds a keyslot opened by the data key and the token that
// describes it, in memory; Write commits both.
func addKMSKeyslot(h *luks2.Header, dev luks2.WriterAtSyncer, vk *secret.Key, provider, region string, dk *kmsclient.DataKey) (*Result, error) {
	pass, err := token.Passphrase(dk.Plaintext)
	if err != nil {
		return nil, err
	}
	defer pass.Wipe()
	slot, err := h.AddKeyslot(dev, vk, pass.Bytes(), token.KDF())
	if err != nil {
		return nil, fmt.Errorf("KMS keyslot: %w", err)
	}
	tok := token.Token{
		Keyslot:    slot,
		KMS:        token.KMS{Provider: provider, KeyID: dk.KeyID, Region: region},
		WrappedKey: dk.Wrapped,
		Binding:    h.UUID(),
	}
	raw, err := tok.Marshal()
	if err != nil {
		return nil, err
	}
	id, err := h.AddToken(raw)
	if err != nil {
		return nil, fmt.Errorf("KMS token: %w", err)
	}
	return &Result{UUID: h.UUID(), KeyID: dk.KeyID, Keyslot: slot, TokenID: id}, nil
}

// Format writes a new LUKS2 header to dev (see Create). Unless o.Force
// is set it refuses a device that holds a LUKS header, a file system or
// a partition table (an ExistingDataError); forced, it also erases the
// signatures beyond the header, which would make the new volume
// ambiguous. It always refuses a device too small for the header and one
// whole sector of data.
func Format(ctx context.Context, dev Device, kms kmsclient.KMS, o FormatOptions) (*Result, error) {
	size, err := deviceSize(dev)
	if err != nil {
		return nil, err
	}
	sector := o.SectorSize
	if sector == 0 {
		sector = DefaultSectorSize
	}
	const dataOffset = 16 << 20 // luks2.Format's default, as cryptsetup's
	if size < dataOffset+int64(sector) {
		return nil, fmt.Errorf("the device is %d bytes; a LUKS2 volume needs its 16 MiB header and at least one %d-byte sector of data", size, sector)
	}
	if (size-dataOffset)%int64(sector) != 0 {
		return nil, &AlignmentError{DataSize: size - dataOffset, SectorSize: sector}
	}
	stale, err := checkFormat(dev, o.Force)
	if err != nil {
		return nil, err
	}
	h, vk, res, err := Create(ctx, dev, kms, o.CreateOptions)
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	if err := h.Write(dev); err != nil {
		return nil, err
	}
	if err := wipeStale(dev, stale, dataOffset); err != nil {
		return nil, err
	}
	return res, nil
}

// kmsToken is a kmsagent token found in a header.
type kmsToken struct {
	id  int
	tok *token.Token
}

// findTokens returns the header's kmsagent tokens in id order. A token of
// our type that does not parse is an error: it was damaged or written by
// a newer kmsagent, and silently skipping it could hide why unlock fails.
func findTokens(h *luks2.Header) ([]kmsToken, error) {
	var out []kmsToken
	for _, id := range h.TokenIDs() {
		raw, err := h.Token(id)
		if err != nil {
			return nil, err
		}
		if token.TypeOf(raw) != token.Type {
			continue
		}
		t, err := token.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("token %d: %w", id, err)
		}
		out = append(out, kmsToken{id, t})
	}
	return out, nil
}

// ErrNotEnrolled means the header has no kmsagent token.
var ErrNotEnrolled = errors.New("the volume has no kmsagent token")

// readHeader reads the LUKS2 header and turns luks2's errors into advice.
func readHeader(dev Device) (*luks2.Header, error) {
	h, err := luks2.Read(dev)
	// luks2.Read reports a device shorter than a binary header as an
	// invalid header (EOF); with no LUKS2 magic anywhere it is simply
	// not LUKS2.
	if errors.Is(err, luks2.ErrInvalidHeader) && !hasLUKS2Magic(dev) {
		err = fmt.Errorf("%w: no LUKS2 magic", luks2.ErrNotLUKS2)
	}
	switch {
	case errors.Is(err, luks2.ErrNotLUKS2):
		return nil, fmt.Errorf("not a LUKS2 volume (no LUKS2 header found): %w", err)
	case errors.Is(err, luks2.ErrInvalidHeader):
		return nil, fmt.Errorf("damaged LUKS2 header, neither copy is valid; restore a header backup (cryptsetup luksHeaderRestore): %w", err)
	case err != nil:
		return nil, fmt.Errorf("read LUKS2 header: %w", err)
	}
	if err := h.CheckAttached(); err != nil {
		return nil, fmt.Errorf("%w; a detached header (cryptsetup --header) or a damaged one: kmsagent keeps the header on the data device, where this data would overwrite it", err)
	}
	return h, nil
}

// ReadHeader reads and validates the LUKS2 header of dev.
func ReadHeader(dev Device) (*luks2.Header, error) { return readHeader(dev) }

// passphrase asks the KMS for a token's data key and returns it encoded
// as the passphrase of the token's keyslot (token.Passphrase). The
// caller wipes it.
func passphrase(ctx context.Context, h *luks2.Header, kms kmsclient.KMS, t kmsToken) (*secret.Key, error) {
	dk, err := dataKey(ctx, h, kms, t)
	if err != nil {
		return nil, err
	}
	defer dk.Wipe()
	pass, err := token.Passphrase(dk)
	if err != nil {
		return nil, fmt.Errorf("token %d: %w", t.id, err)
	}
	return pass, nil
}

// dataKey asks the KMS for a token's data key. The caller wipes it.
func dataKey(ctx context.Context, h *luks2.Header, kms kmsclient.KMS, t kmsToken) (*secret.Key, error) {
	if t.tok.Binding != h.UUID() {
		return nil, &BindingError{TokenID: t.id, Binding: t.tok.Binding, UUID: h.UUID()}
	}
	if p := kms.Provider(); p != t.tok.KMS.Provider {
		return nil, fmt.Errorf("token %d was made with KMS provider %q but the agent is configured for %q; set [kms] provider = %q", t.id, t.tok.KMS.Provider, p, t.tok.KMS.Provider)
	}
	dk, err := kms.Decrypt(ctx, t.tok.KMS.KeyID, t.tok.WrappedKey, t.tok.Binding)
	if err != nil {
		return nil, fmt.Errorf("unwrap the data key of token %d (KMS key %s): %w", t.id, t.tok.KMS.KeyID, err)
	}
	return dk, nil
}

// unwrap asks the KMS for a token's data key and opens its keyslot. The
// keyslot's area is read and its memory mapped while the KMS request is
// in flight (luks2.PreparedKeyslot), the passphrase built in that memory:
// a boot that unlocks many volumes at once then has only the key
// derivation, decryption and merge to do per volume when the replies
// come back together.
func unwrap(ctx context.Context, dev Device, h *luks2.Header, kms kmsclient.KMS, t kmsToken) (*secret.Key, error) {
	type prepared struct {
		p   *luks2.PreparedKeyslot
		err error
	}
	ready := make(chan prepared, 1)
	go func() {
		p, err := h.PrepareKeyslot(dev, t.tok.Keyslot, token.PassphraseLen)
		ready <- prepared{p, err}
	}()
	dk, err := dataKey(ctx, h, kms, t)
	prep := <-ready
	if prep.err == nil {
		defer prep.p.Close()
	}
	if err != nil {
		return nil, err
	}
	defer dk.Wipe()
	if prep.err != nil {
		return nil, fmt.Errorf("token %d: %w", t.id, prep.err)
	}
	pass := prep.p.PassphraseBuffer()
	if err := token.PassphraseInto(pass, dk); err != nil {
		return nil, fmt.Errorf("token %d: %w", t.id, err)
	}
	dk.Wipe() // the passphrase holds it now; the merge takes a while
	vk, err := prep.p.Open(pass)
	if errors.Is(err, luks2.ErrWrongPassphrase) {
		return nil, fmt.Errorf("token %d: the KMS data key does not open keyslot %d; the keyslot was replaced or damaged: %w", t.id, t.tok.Keyslot, err)
	}
	if err != nil {
		return nil, fmt.Errorf("token %d: %w", t.id, err)
	}
	return vk, nil
}

// firstToken calls try on the header's kmsagent tokens in id order until
// one succeeds, and returns its key and the KMS key of the token it
// ended on: the one that worked, or on error the last one tried (zero
// when there was none), for an audit record.
func firstToken(h *luks2.Header, try func(kmsToken) (*secret.Key, error)) (*secret.Key, token.KMS, error) {
	toks, err := findTokens(h)
	if err != nil {
		return nil, token.KMS{}, err
	}
	if len(toks) == 0 {
		return nil, token.KMS{}, ErrNotEnrolled
	}
	var errs []error
	for _, t := range toks {
		k, err := try(t)
		if err == nil {
			return k, t.tok.KMS, nil
		}
		errs = append(errs, err)
	}
	return nil, toks[len(toks)-1].tok.KMS, errors.Join(errs...)
}

// Unlock returns the volume key of dev, unwrapped through its kmsagent
// token. With several tokens the first that works wins. The caller wipes
// the key.
func Unlock(ctx context.Context, dev Device, kms kmsclient.KMS) (*secret.Key, error) {
	h, err := readHeader(dev)
	if err != nil {
		return nil, err
	}
	vk, _, err := firstToken(h, func(t kmsToken) (*secret.Key, error) { return unwrap(ctx, dev, h, kms, t) })
	return vk, err
}

// Passphrase returns the passphrase of dev's kmsagent keyslot: the data
// key of its token, unwrapped by the KMS under the volume's UUID and
// encoded by token.Passphrase, exactly the bytes cryptsetup needs. It is
// for handing the key to cryptsetup (systemd-cryptsetup's key socket)
// without opening the keyslot, which would put the volume key in this
// process; cryptsetup checks the passphrase anyway. With several tokens
// the first that unwraps wins. The KMS key of the token used, or of the
// last one tried, is returned even on error, for the audit record. The
// caller wipes the passphrase.
func Passphrase(ctx context.Context, dev Device, kms kmsclient.KMS) (*secret.Key, token.KMS, error) {
	h, err := readHeader(dev)
	if err != nil {
		return nil, token.KMS{}, err
	}
	return firstToken(h, func(t kmsToken) (*secret.Key, error) { return passphrase(ctx, h, kms, t) })
}

// OpenWithPassphrase returns the volume key of any LUKS2 volume (ours or
// cryptsetup's) for a passphrase that opens one of its keyslots.
func OpenWithPassphrase(dev Device, passphrase []byte) (*secret.Key, error) {
	h, err := readHeader(dev)
	if err != nil {
		return nil, err
	}
	return openAny(dev, h, passphrase)
}

func openAny(dev Device, h *luks2.Header, passphrase []byte) (*secret.Key, error) {
	vk, _, err := h.OpenAny(dev, passphrase)
	if errors.Is(err, luks2.ErrUnboundKeyslot) {
		return nil, fmt.Errorf("%w; give the passphrase of a keyslot bound to the data segment (cryptsetup luksDump shows the others as \"luks2 (unbound)\")", err)
	}
	if errors.Is(err, luks2.ErrWrongPassphrase) {
		return nil, fmt.Errorf("the passphrase opens no keyslot (is it the right file? passphrase files are used byte for byte, trailing newline included, as cryptsetup --key-file does): %w", err)
	}
	if err != nil {
		return nil, err
	}
	return vk, nil
}

// ExportKey returns the volume key: through the kmsagent token, or with a
// passphrase when one is given. The caller wipes it.
func ExportKey(ctx context.Context, dev Device, kms kmsclient.KMS, passphrase []byte) (*secret.Key, error) {
	if passphrase != nil {
		return OpenWithPassphrase(dev, passphrase)
	}
	return Unlock(ctx, dev, kms)
}

// EnrollOptions name the KMS key an existing volume is bound to.
type EnrollOptions struct {
	KeyID  string
	Region string
}

// Enroll binds an existing LUKS2 volume to the KMS without touching its
// data: the passphrase must open a keyslot, whose volume key then gets a
// KMS keyslot and token, committed in one header write. A volume that is
// already enrolled is refused (rewrap changes the KMS key).
func Enroll(ctx context.Context, dev Device, kms kmsclient.KMS, passphrase []byte, o EnrollOptions) (*Result, error) {
	if o.KeyID == "" {
		return nil, errors.New("no KMS key id given")
	}
	h, toks, err := readForChange(dev)
	if err != nil {
		return nil, err
	}
	if len(toks) > 0 {
		return nil, &EnrolledError{TokenID: toks[0].id, KeyID: toks[0].tok.KMS.KeyID}
	}
	vk, err := openAny(dev, h, passphrase)
	if err != nil {
		return nil, err
	}
	defer vk.Wipe()
	dk, err := kms.GenerateDataKey(ctx, o.KeyID, token.DataKeySize, h.UUID())
	if err != nil {
		return nil, fmt.Errorf("generate data key under KMS key %s: %w", o.KeyID, err)
	}
	defer dk.Wipe()
	res, err := addKMSKeyslot(h, dev, vk, kms.Provider(), o.Region, dk)
	if err != nil {
		return nil, err
	}
	res.RecoveryKeyslot = -1
	if err := h.Write(dev); err != nil {
		return nil, err
	}
	return res, nil
}

// checkChangeable refuses headers luks2 would refuse to change, with the
// reason an admin can act on.
// readForChange reads the header of a volume about to be changed, and its
// kmsagent tokens.
func readForChange(dev Device) (*luks2.Header, []kmsToken, error) {
	h, err := readHeader(dev)
	if err != nil {
		return nil, nil, err
	}
	if err := checkOnlyLUKS2(dev); err != nil {
		return nil, nil, err
	}
	if err := checkChangeable(h); err != nil {
		return nil, nil, err
	}
	toks, err := findTokens(h)
	if err != nil {
		return nil, nil, err
	}
	return h, toks, nil
}

func checkChangeable(h *luks2.Header) error {
	if r := h.Requirements(); len(r) > 0 {
		return fmt.Errorf("the header has mandatory requirements (%s), e.g. an unfinished reencryption; finish it with cryptsetup first", strings.Join(r, ", "))
	}
	return nil
}

// Unenroll removes every kmsagent token and the keyslots they open. It
// refuses when no other keyslot of the volume key would be left: the
// volume would become unopenable.
func Unenroll(ctx context.Context, dev Device) ([]int, error) {
	h, toks, err := readForChange(dev)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, ErrNotEnrolled
	}
	ours := map[int]bool{}
	for _, t := range toks {
		ours[t.tok.Keyslot] = true
	}
	seg, err := h.Segment()
	if err != nil {
		return nil, err
	}
	left := 0
	var unbound []int
	for _, ks := range h.Keyslots() {
		// Only keyslots bound to the data segment open the volume; an
		// unbound one (luksAddKey --unbound) has a digest too, but of a
		// key of its own.
		if !ours[ks.ID] && ks.Type == "luks2" && ks.Bound && ks.KeySize == seg.KeySize && ks.Priority != 0 {
			left++
		}
		if ks.Type == "luks2" && !ks.Bound {
			unbound = append(unbound, ks.ID)
		}
	}
	if left == 0 {
		return nil, &LastKeyslotError{Unbound: unbound}
	}
	for _, t := range toks {
		if err := h.RemoveToken(t.id); err != nil {
			return nil, err
		}
	}
	var removed []int
	for _, ks := range h.Keyslots() {
		if !ours[ks.ID] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		// RemoveKeyslot commits the header, together with the token
		// removal above on the first call.
		if err := h.RemoveKeyslot(dev, ks.ID); err != nil {
			return removed, err
		}
		removed = append(removed, ks.ID)
	}
	return removed, nil
}

// Rewrap re-wraps the data key of every kmsagent token under newKeyID (or
// the current version of the same key) and rewrites only the tokens, in
// one header write. Before committing, it checks that each new wrapped
// key unwraps and still opens its keyslot, so a KMS fault cannot lock the
// volume out. It returns the previous key ids.
func Rewrap(ctx context.Context, dev Device, kms kmsclient.KMS, newKeyID string) ([]string, error) {
	if newKeyID == "" {
		return nil, errors.New("no KMS key id given")
	}
	h, toks, err := readForChange(dev)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, ErrNotEnrolled
	}
	// Store the key id as the KMS names it, so the token does not depend
	// on an alias that may later point elsewhere. DescribeKey may be
	// denied where ReEncrypt is allowed; the id as given still works then.
	if info, err := kms.DescribeKey(ctx, newKeyID); err == nil && info.ID != "" {
		newKeyID = info.ID
	}
	var old []string
	for _, t := range toks {
		// The current token must work before it is replaced.
		vk, err := unwrap(ctx, dev, h, kms, t)
		if err != nil {
			return nil, err
		}
		vk.Wipe()
		wrapped, err := kms.ReEncrypt(ctx, t.tok.KMS.KeyID, t.tok.WrappedKey, newKeyID, t.tok.Binding)
		if err != nil {
			return nil, fmt.Errorf("re-wrap the data key of token %d under KMS key %s: %w", t.id, newKeyID, err)
		}
		nt := *t.tok
		nt.KMS.KeyID, nt.WrappedKey = newKeyID, wrapped
		vk, err = unwrap(ctx, dev, h, kms, kmsToken{t.id, &nt})
		if err != nil {
			return nil, fmt.Errorf("the re-wrapped key does not work, header left unchanged: %w", err)
		}
		vk.Wipe()
		raw, err := nt.Marshal()
		if err != nil {
			return nil, err
		}
		if err := h.SetToken(t.id, raw); err != nil {
			return nil, err
		}
		old = append(old, t.tok.KMS.KeyID)
	}
	if err := h.Write(dev); err != nil {
		return nil, err
	}
	return old, nil
}

// hasLUKS2Magic reports whether either LUKS2 header copy's magic is where
// it can be.
func hasLUKS2Magic(dev Device) bool {
	magic := make([]byte, 6)
	if n, _ := dev.ReadAt(magic, 0); n == len(magic) && string(magic) == "LUKS\xba\xbe" {
		return true
	}
	for _, off := range probe.SecondaryOffsets {
		if n, _ := dev.ReadAt(magic, off); n == len(magic) && string(magic) == "SKUL\xba\xbe" {
			return true
		}
	}
	return false
}
