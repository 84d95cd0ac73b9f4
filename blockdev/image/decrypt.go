package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"kmsagent/agent/secret"
	"kmsagent/blockdev/luks2"
	"kmsagent/blockdev/token"
	"kmsagent/blockdev/volume"
	"kmsagent/kmsclient"
)

// Disk is what an image is read from: a file, a block device, or one
// partition of a disk image (OpenPartition). *os.File is one.
type Disk interface {
	volume.Device
	io.Seeker
}

// DecryptOptions say how to get the volume key: through the kmsagent
// token with KMS, or with Passphrase (any LUKS2 image, cryptsetup's too).
type DecryptOptions struct {
	KMS        kmsclient.KMS
	Passphrase []byte // used as exact bytes, like cryptsetup's --key-file
	Progress   func(done int64)
}

// payloadLayout is where an image's data is and how much of it to give.
type payloadLayout struct {
	seg      luks2.SegmentInfo
	payload  int64 // whole sectors of encrypted data
	out      int64 // bytes to output
	recorded bool  // out comes from a kmsagent-image token
	warnings []string
}

// layout works out the payload of an image from its header and size.
func layout(h *luks2.Header, fileSize int64) (*payloadLayout, error) {
	seg, err := h.Segment()
	if err != nil {
		return nil, err
	}
	if seg.Integrity != "" {
		return nil, fmt.Errorf("the segment uses integrity protection (%s), which image decrypt does not support", seg.Integrity)
	}
	l := &payloadLayout{seg: seg}
	// Offsets and sizes are unsigned 64-bit in the header and may be
	// anything below 2^64; compared in uint64 against the file size, a
	// header that claims more than the file holds is refused, never
	// turned into a negative length.
	size := uint64(max(fileSize, 0))
	if size < seg.Offset {
		return nil, fmt.Errorf("the image is %d bytes, shorter than its %d-byte header: it is truncated", fileSize, seg.Offset)
	}
	avail := size - seg.Offset
	ss := uint64(seg.SectorSize)
	if seg.Dynamic {
		payload := avail / ss * ss
		if rest := avail - payload; rest != 0 {
			l.warnings = append(l.warnings, fmt.Sprintf("the last %d bytes of the image are not a whole %d-byte sector and are ignored, as dm-crypt would", rest, ss))
		}
		l.payload = int64(payload)
	} else {
		if seg.Size > avail {
			return nil, fmt.Errorf("the segment is %d bytes but the image holds only %d after the header: it is truncated", seg.Size, avail)
		}
		l.payload = int64(seg.Size)
	}
	l.out = l.payload
	for _, id := range h.TokenIDs() {
		raw, _ := h.Token(id)
		if token.TypeOf(raw) != token.ImageType {
			continue
		}
		im, err := token.ParseImage(raw)
		if err != nil {
			return nil, fmt.Errorf("token %d: %w", id, err)
		}
		// The record is only believed while it describes padding of the
		// last sector; an image grown since keeps all of its data.
		if im.Size <= uint64(l.payload) && uint64(l.payload)-im.Size < ss {
			l.out, l.recorded = int64(im.Size), true
		} else {
			l.warnings = append(l.warnings, fmt.Sprintf("token %d records an input size of %d bytes, which does not fit the %d-byte payload; giving the whole payload", id, im.Size, l.payload))
		}
		break
	}
	return l, nil
}

// volumeKey opens the image with a passphrase or through its token.
func volumeKey(ctx context.Context, img volume.Device, h *luks2.Header, o DecryptOptions) (*secret.Key, error) {
	if o.Passphrase != nil {
		return volume.OpenWithPassphrase(img, o.Passphrase)
	}
	if o.KMS == nil {
		return nil, errors.New("no KMS configured and no passphrase given")
	}
	return volume.Unlock(ctx, img, o.KMS)
}

// Decrypt writes the decrypted payload of img to out: exactly the input
// of image encrypt when the image records its size, otherwise the whole
// segment (whole sectors), as cryptsetup would show it.
func Decrypt(ctx context.Context, img Disk, out io.Writer, o DecryptOptions) (*Result, error) {
	return decrypt(ctx, img, &transfer{dst: out}, o)
}

// DecryptFile writes the decrypted payload of img into out, a new, empty
// file, as Decrypt does to a stream. Zeros in the payload (the holes of
// the input of encrypt) are left as holes, so out is as sparse as the
// input was. out is not synced.
func DecryptFile(ctx context.Context, img Disk, out *os.File, o DecryptOptions) (*Result, error) {
	res, err := decrypt(ctx, img, &transfer{dstAt: out, sparse: true}, o)
	if err != nil {
		return nil, err
	}
	if err := out.Truncate(res.InputSize); err != nil {
		return nil, fmt.Errorf("write output: %w", err)
	}
	return res, nil
}

// decrypt opens img and runs t, whose destination is set, over its
// payload.
func decrypt(ctx context.Context, img Disk, t *transfer, o DecryptOptions) (*Result, error) {
	h, err := volume.ReadHeader(img)
	if err != nil {
		return nil, err
	}
	size, err := img.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("image size: %w", err)
	}
	l, err := layout(h, size)
	if err != nil {
		return nil, err
	}
	if l.seg.Encryption != "aes-xts-plain64" {
		return nil, fmt.Errorf("the data cipher is %s; image decrypt supports aes-xts-plain64 (cryptsetup's default)", l.seg.Encryption)
	}
	vk, err := volumeKey(ctx, img, h, o)
	if err != nil {
		return nil, err
	}
	sc, err := newSectorCrypt(vk.Bytes(), l.seg.SectorSize, l.seg.IVTweak)
	vk.Wipe()
	if err != nil {
		return nil, err
	}
	defer sc.wipe()
	t.sc, t.decrypt = sc, true
	t.srcAt, t.srcOff, t.srcLen = img, int64(l.seg.Offset), l.payload
	t.dstLen = l.out
	t.progress = o.Progress
	if f, ok := img.(interface{ Fd() uintptr }); ok {
		_ = unix.Fadvise(int(f.Fd()), t.srcOff, t.srcLen, unix.FADV_SEQUENTIAL) // only a hint
	}
	if _, err := t.run(ctx); err != nil {
		return nil, err
	}
	return &Result{UUID: h.UUID(), InputSize: l.out, PayloadSize: l.payload, PayloadOffset: int64(l.seg.Offset), SizeRecorded: l.recorded, Warnings: append(h.Warnings(), l.warnings...)}, nil
}
