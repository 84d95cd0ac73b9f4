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

	"golang.org/x/sys/unix"

	"kmsagent/agent/service"
	"kmsagent/blockdev/image"
	"kmsagent/blockdev/volume"
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
	var sectorSize int
	pos, err := parseFlags(env, "image encrypt", "IN OUT", args, 2, 2, func(fs *flag.FlagSet) {
		fs.StringVar(&keyID, "key-id", "", "KMS key id (the local provider also takes an alias) that wraps the image's data key")
		fs.IntVar(&sectorSize, "sector-size", 0, fmt.Sprintf("encryption sector size in bytes, 512 or 4096 (default %d, or 512 when the input's file system or partition table needs it)", volume.DefaultSectorSize))
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
	bar := newProgress(env.stderr, o.InputSize)
	o.Progress = bar.update
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
	bar.done()
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
	pos, err := parseFlags(env, "image decrypt", "IMG OUT", args, 2, 2, func(fs *flag.FlagSet) {
		fs.StringVar(&passFile, "passphrase-file", "", "open a keyslot with the passphrase in FILE instead of the KMS token (works for any LUKS2 image)")
	})
	if err != nil {
		return err
	}
	imgPath, outPath := pos[0], pos[1]
	if imgPath == stdio {
		return usagef("image decrypt: IMG must be a file or device, not standard input (its header copies are read by offset)")
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
	total := int64(-1)
	if info, err := image.Inspect(img); err == nil {
		total = info.Segment.PayloadSize
	}
	bar := newProgress(env.stderr, total)
	o.Progress = bar.update
	var res *image.Result
	if outPath == stdio {
		res, err = image.Decrypt(ctx, img, env.stdout, o)
	} else {
		var out *image.Output
		// The output is plaintext: readable by its owner only.
		if out, err = image.CreateOutput(outPath, 0o600); err != nil {
			return err
		}
		if res, err = image.Decrypt(ctx, img, out.File, o); err != nil {
			out.Abort()
		} else {
			err = out.Commit()
		}
	}
	bar.done()
	if err != nil {
		return fmt.Errorf("%s: %w", imgPath, err)
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
	pos, err := parseFlags(env, "image inspect", "IMG", args, 1, 1, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	img, err := volume.OpenDevice(pos[0], false)
	if err != nil {
		return err
	}
	defer img.Close()
	info, err := image.Inspect(img)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	if asJSON {
		return writeJSON(env, info)
	}
	return info.WriteText(env.stdout)
}

// progress draws a one-line bar on stderr when stderr is a terminal, and
// nothing otherwise (logs and pipes get no carriage-return noise).
type progress struct {
	w      io.Writer
	total  int64
	start  time.Time
	last   time.Time
	active bool
	drawn  bool
}

func newProgress(w io.Writer, total int64) *progress {
	p := &progress{w: w, total: total, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			p.active = true
		}
	}
	return p
}

func (p *progress) update(done int64) {
	if !p.active {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 200*time.Millisecond && done != p.total {
		return
	}
	p.last = now
	rate := float64(done) / max(now.Sub(p.start).Seconds(), 1e-3) / 1e6
	if p.total > 0 {
		const width = 30
		frac := min(float64(done)/float64(p.total), 1)
		fill := int(frac * width)
		fmt.Fprintf(p.w, "\r%3.0f%% [%s%s] %s / %s  %.0f MB/s ", frac*100, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), mib(done), mib(p.total), rate)
	} else {
		fmt.Fprintf(p.w, "\r%s  %.0f MB/s ", mib(done), rate)
	}
	p.drawn = true
}

func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
