package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"kmsagent/agent/service"
	"kmsagent/blockdev/image"
	"kmsagent/blockdev/partition"
	"kmsagent/blockdev/volume"
	"kmsagent/cmd/kmsagent/internal/progress"
)

// stdio is the argument that names standard input or output.
const stdio = "-"

// inputSize is the size of an input that can tell it (a regular file or
// a block device), or -1 (a pipe).
func inputSize(r io.Reader) int64 {
	f, ok := r.(*os.File)
	if !ok {
		return -1
	}
	fi, err := f.Stat()
	if err != nil {
		return -1
	}
	switch {
	case fi.Mode().IsRegular():
		return fi.Size()
	case fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0:
		if n, err := f.Seek(0, io.SeekEnd); err == nil {
			if _, err := f.Seek(0, io.SeekStart); err == nil {
				return n
			}
		}
	}
	return -1
}

func runImageEncrypt(ctx context.Context, env *cliEnv, args []string) error {
	var keyID string
	var sectorSize, part int
	var pmode progress.Mode
	pos, err := parseFlags(env, "image encrypt", "IN OUT", args, 2, 2, func(fs *flag.FlagSet) {
		fs.StringVar(&keyID, "key-id", "", "KMS key id (the local provider also takes an alias) that wraps the image's data key")
		fs.IntVar(&sectorSize, "sector-size", 0, fmt.Sprintf("encryption sector size in bytes, 512 or 4096 (default %d, or 512 when the input's file system or partition table needs it)", volume.DefaultSectorSize))
		fs.IntVar(&part, "partition", 0, "encrypt only partition `N` of a disk image (GPT or MBR); the others are copied as they are")
		progressFlag(fs, &pmode)
	})
	if err != nil {
		return err
	}
	if keyID == "" {
		return usagef("image encrypt: --key-id is required")
	}
	if sectorSize != 0 && sectorSize != 512 && sectorSize != 4096 {
		return usagef("image encrypt: --sector-size must be 512 or 4096")
	}
	inPath, outPath := pos[0], pos[1]
	if part < 0 {
		return usagef("image encrypt: --partition must be a partition number, 1 or more")
	}
	if part > 0 {
		return encryptPartition(ctx, env, inPath, outPath, part, pmode, image.EncryptOptions{KeyID: keyID, SectorSize: sectorSize})
	}
	in := env.stdin
	if inPath != stdio {
		f, err := os.Open(inPath)
		if err != nil {
			return fmt.Errorf("input: %w", err)
		}
		defer f.Close()
		in = f
	}
	svc, err := newService(env)
	if err != nil {
		return err
	}
	kms, region, err := svc.OpenKMSRegion(ctx)
	if err != nil {
		return err
	}
	o := image.EncryptOptions{KMS: kms, KeyID: keyID, Region: region, SectorSize: sectorSize, InputSize: inputSize(in)}
	bar := newMeter(env, pmode, o.InputSize)
	o.Progress = bar.Update
	var res *image.Result
	if outPath == stdio {
		res, err = image.Encrypt(ctx, in, env.stdout, o)
	} else {
		var out *image.Output
		if out, err = image.CreateOutput(outPath, 0o644); err != nil {
			return err
		}
		if res, err = image.EncryptFile(ctx, in, out.File, o); err != nil {
			out.Abort()
		} else {
			err = out.Commit()
		}
	}
	bar.Finish(err == nil)
	var sse *image.SectorSizeError
	if errors.As(err, &sse) {
		return fmt.Errorf("%s: %w; use --sector-size %d, or leave --sector-size out to have it chosen", inPath, err, largestSectorSize(sse.Found.BlockSize))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", outPath, err)
	}
	report := env.stdout
	if outPath == stdio {
		report = env.stderr // stdout carries the image
	}
	why := ""
	if res.SectorSizeFor != "" {
		why = " to suit " + res.SectorSizeFor
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(env.stderr, "kmsagent: warning: %s\n", w)
	}
	fmt.Fprintf(report, "%s: LUKS2 image %s, %d bytes of input in %d-byte sectors%s, key wrapped by %s key %s\n", outPath, res.UUID, res.InputSize, res.SectorSize, why, kms.Provider(), res.KeyID)
	return nil
}

// largestSectorSize is the largest LUKS2 sector size kmsagent writes
// that content with blocks of blockSize bytes can be used with.
func largestSectorSize(blockSize int) int {
	if blockSize >= 4096 {
		return 4096
	}
	return 512
}

func runImageDecrypt(ctx context.Context, env *cliEnv, args []string) error {
	var passFile string
	var part int
	var pmode progress.Mode
	pos, err := parseFlags(env, "image decrypt", "IMG OUT", args, 2, 2, func(fs *flag.FlagSet) {
		progressFlag(fs, &pmode)
		fs.StringVar(&passFile, "passphrase-file", "", "open a keyslot with the passphrase in FILE instead of the KMS token (works for any LUKS2 image)")
		fs.IntVar(&part, "partition", 0, "decrypt partition `N` of a disk image: OUT is a copy of the disk with that partition plain again")
	})
	if err != nil {
		return err
	}
	imgPath, outPath := pos[0], pos[1]
	if imgPath == stdio {
		return usagef("image decrypt: IMG must be a file or device, not standard input (its header copies are read by offset)")
	}
	if part < 0 {
		return usagef("image decrypt: --partition must be a partition number, 1 or more")
	}
	if part > 0 && outPath == stdio {
		return usagef("image decrypt: with --partition, OUT must be a file (a disk image is written by offset)")
	}
	o := image.DecryptOptions{}
	if passFile != "" {
		pass, err := service.ReadPassphrase(passFile)
		if err != nil {
			return err
		}
		defer pass.Wipe()
		o.Passphrase = pass.Bytes()
	}
	img, err := volume.OpenDevice(imgPath, false)
	if err != nil {
		return err
	}
	defer img.Close()
	if o.Passphrase == nil {
		svc, err := newService(env)
		if err != nil {
			return err
		}
		if o.KMS, err = svc.OpenKMS(ctx); err != nil {
			return err
		}
	}
	if part > 0 {
		return decryptPartition(ctx, env, img, imgPath, outPath, part, pmode, o)
	}
	total := int64(-1)
	if info, err := image.Inspect(img); err == nil {
		total = info.Segment.PayloadSize
	}
	bar := newMeter(env, pmode, total)
	o.Progress = bar.Update
	var res *image.Result
	if outPath == stdio {
		res, err = image.Decrypt(ctx, img, env.stdout, o)
	} else {
		var out *image.Output
		// The output is plaintext: readable by its owner only.
		if out, err = image.CreateOutput(outPath, 0o600); err != nil {
			return err
		}
		if res, err = image.DecryptFile(ctx, img, out.File, o); err != nil {
			out.Abort()
		} else {
			err = out.Commit()
		}
	}
	bar.Finish(err == nil)
	if err != nil {
		return fmt.Errorf("%s: %w%s", imgPath, err, partitionHint(img, err))
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(env.stderr, "kmsagent: warning: %s\n", w)
	}
	report := env.stdout
	if outPath == stdio {
		report = env.stderr
	}
	fmt.Fprintf(report, "%s: %d bytes decrypted from LUKS2 image %s\n", outPath, res.InputSize, res.UUID)
	return nil
}

func runImageInspect(ctx context.Context, env *cliEnv, args []string) error {
	var asJSON bool
	var part int
	pos, err := parseFlags(env, "image inspect", "IMG", args, 1, 1, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		fs.IntVar(&part, "partition", 0, "show only the LUKS2 header of partition `N` of a disk image")
	})
	if err != nil {
		return err
	}
	img, err := volume.OpenDevice(pos[0], false)
	if err != nil {
		return err
	}
	defer img.Close()
	var dev image.Disk = img
	switch {
	case part > 0:
		if dev, _, err = image.OpenPartition(img, part); err != nil {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
	case !hasLUKSMagic(img):
		// A disk image: its partitions, and the headers of the encrypted
		// ones. Without a partition table it is shown as a LUKS2 image,
		// which says what it is not.
		if di, err := image.InspectDisk(img); err == nil {
			if asJSON {
				return writeJSON(env, di)
			}
			return di.WriteText(env.stdout)
		} else if !errors.Is(err, partition.ErrNoTable) {
			return fmt.Errorf("%s: %w", pos[0], err)
		}
	}
	info, err := image.Inspect(dev)
	if err != nil {
		if part > 0 {
			return fmt.Errorf("%s: partition %d: %w", pos[0], part, err)
		}
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	if asJSON {
		return writeJSON(env, info)
	}
	return info.WriteText(env.stdout)
}

// progressFlag defines --progress on fs.
func progressFlag(fs *flag.FlagSet, mode *progress.Mode) {
	fs.Func("progress", "show progress on standard error: auto (when it is a terminal), always or never (default auto)", func(s string) error {
		m, err := progress.ParseMode(s)
		*mode = m
		return err
	})
}

// newMeter is the progress meter of one image command, on stderr.
func newMeter(env *cliEnv, mode progress.Mode, total int64) *progress.Meter {
	return progress.New(env.stderr, mode, total, time.Now)
}

// hasLUKSMagic reports whether f starts with a LUKS header: a LUKS2 image
// of a whole disk, whose payload may hold a partition table of its own.
func hasLUKSMagic(f *os.File) bool {
	b := make([]byte, 6)
	_, err := f.ReadAt(b, 0)
	return err == nil && string(b) == "LUKS\xba\xbe"
}

// partitionHint names the encrypted partitions of a disk image that was
// taken for a LUKS2 image.
func partitionHint(img *os.File, err error) string {
	if hasLUKSMagic(img) {
		return ""
	}
	di, derr := image.InspectDisk(img)
	if derr != nil {
		return ""
	}
	var enc []string
	for _, p := range di.Partitions {
		if p.Encrypted {
			enc = append(enc, fmt.Sprint(p.Number))
		}
	}
	if len(enc) == 0 {
		return fmt.Sprintf("; it is a disk image with a %s partition table and no LUKS2 partition", di.Scheme)
	}
	return fmt.Sprintf("; it is a disk image with a %s partition table: name the LUKS2 partition with --partition %s", di.Scheme, strings.Join(enc, "|"))
}

// encryptPartition is image encrypt --partition: a disk image in, a disk
// image out, with one partition encrypted.
func encryptPartition(ctx context.Context, env *cliEnv, inPath, outPath string, n int, pmode progress.Mode, o image.EncryptOptions) error {
	if inPath == stdio || outPath == stdio {
		return usagef("image encrypt: with --partition, IN and OUT must be files (a disk image is read and written by offset)")
	}
	in, err := volume.OpenDevice(inPath, false)
	if err != nil {
		return fmt.Errorf("input: %w", err)
	}
	defer in.Close()
	size := inputSize(in)
	if size < 0 {
		return fmt.Errorf("%s: cannot tell its size", inPath)
	}
	t, err := image.ReadTable(in, size)
	if errors.Is(err, partition.ErrNoTable) {
		return fmt.Errorf("%s: %w; leave out --partition to encrypt the whole image", inPath, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", inPath, err)
	}
	p, err := t.Partition(n)
	if err != nil {
		return fmt.Errorf("%s: %w", inPath, err)
	}
	svc, err := newService(env)
	if err != nil {
		return err
	}
	kms, region, err := svc.OpenKMSRegion(ctx)
	if err != nil {
		return err
	}
	o.KMS, o.Region = kms, region
	bar := newMeter(env, pmode, p.Size)
	o.Progress = bar.Update
	// The other partitions are copied in plain text: the output is no
	// more readable than the input.
	mode := fs.FileMode(0o600)
	if fi, err := in.Stat(); err == nil && fi.Mode().IsRegular() {
		mode = fi.Mode().Perm() & 0o644
	}
	out, err := image.CreateOutput(outPath, mode)
	if err != nil {
		return err
	}
	res, err := image.EncryptPartition(ctx, in, size, out.File, n, o)
	if err != nil {
		out.Abort()
	} else {
		err = out.Commit()
	}
	bar.Finish(err == nil)
	var sse *image.SectorSizeError
	if errors.As(err, &sse) {
		return fmt.Errorf("%s: partition %d: %w; use --sector-size %d, or leave --sector-size out to have it chosen", inPath, n, err, largestSectorSize(sse.Found.BlockSize))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", inPath, err)
	}
	for _, w := range append(res.Table.Warnings, res.Warnings...) {
		fmt.Fprintf(env.stderr, "kmsagent: warning: %s\n", w)
	}
	why := ""
	if res.SectorSizeFor != "" {
		why = " to suit " + res.SectorSizeFor
	}
	fmt.Fprintf(env.stdout, "%s: partition %d (PARTUUID %s) is LUKS2 %s, %d bytes of input in %d-byte sectors%s, key wrapped by %s key %s; %s\n",
		outPath, n, res.Partition.UUID, res.UUID, res.InputSize, res.SectorSize, why, kms.Provider(), res.KeyID, growth(res, p))
	return nil
}

// growth says how the disk made room for the LUKS2 header.
func growth(res *image.PartitionResult, before partition.Partition) string {
	grew := res.Partition.Size - before.Size
	switch {
	case res.Grown > 0 && res.Grown < grew:
		return fmt.Sprintf("the partition grew by %d bytes, into the free space after it and by growing the disk %d bytes", grew, res.Grown)
	case res.Grown > 0:
		return fmt.Sprintf("the partition and the disk grew by %d bytes", grew)
	case grew > 0:
		return fmt.Sprintf("the partition grew by %d bytes into the free space after it", grew)
	case res.Grown < 0:
		return fmt.Sprintf("the partition and the disk shrank by %d bytes", -grew)
	case grew < 0:
		return fmt.Sprintf("the partition shrank by %d bytes, leaving free space after it", -grew)
	}
	return "the partition kept its size"
}

// decryptPartition is image decrypt --partition: the disk image with
// one partition decrypted in place.
func decryptPartition(ctx context.Context, env *cliEnv, img *os.File, imgPath, outPath string, n int, pmode progress.Mode, o image.DecryptOptions) error {
	dev, p, err := image.OpenPartition(img, n)
	if err != nil {
		return fmt.Errorf("%s: %w", imgPath, err)
	}
	total := int64(-1)
	if info, err := image.Inspect(dev); err == nil {
		total = info.Segment.PayloadSize
	}
	bar := newMeter(env, pmode, total)
	o.Progress = bar.Update
	// The output holds plaintext: readable by its owner only.
	out, err := image.CreateOutput(outPath, 0o600)
	if err != nil {
		return err
	}
	res, err := image.DecryptPartition(ctx, img, out.File, n, o)
	if err != nil {
		out.Abort()
	} else {
		err = out.Commit()
	}
	bar.Finish(err == nil)
	if err != nil {
		return fmt.Errorf("%s: %w", imgPath, err)
	}
	for _, w := range append(res.Table.Warnings, res.Warnings...) {
		fmt.Fprintf(env.stderr, "kmsagent: warning: %s\n", w)
	}
	fmt.Fprintf(env.stdout, "%s: partition %d (PARTUUID %s): %d bytes decrypted from LUKS2 %s; %s\n", outPath, n, res.Partition.UUID, res.InputSize, res.UUID, growth(res, p))
	return nil
}
