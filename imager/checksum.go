package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"

	imgcopy "github.com/vmdkpop/vmdkpop/imager/internal/copy"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// runChecksum prints the sha256 of an image's guest-visible content (a
// VMDK chain, a raw file or a block device): the same for any two images
// that read the same.
func runChecksum(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("checksum", flag.ContinueOnError)
	format := fs.String("f", "", "vmdk or raw (default: probe)")
	size := fs.String("size", "", "hash only the first SIZE bytes (a device larger than the disk)")
	resultFile := resultFlag(fs)
	var pf pathFlags
	pf.register(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	if err := checkFormat("-f", *format); err != nil {
		return err
	}
	var limit int64 = -1
	if *size != "" {
		if limit, err = parseSize(*size); err != nil {
			return err
		}
	}
	sum, n, err := checksum(ctx, pos[0], *format, &pf, limit)
	if *resultFile != "" {
		r := jobapi.Result{SHA256: sum, VirtualSize: n, Target: pos[0]}
		code := settle(&r, err, "sha256 of "+pos[0])
		if werr := jobapi.Write(*resultFile, &r); werr != nil && err == nil {
			return werr
		}
		if code != 0 {
			return &exitError{code: code, msg: fmt.Sprintf("imager checksum: %v", err)}
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s  %s\n", sum, pos[0])
	return nil
}

func checksum(ctx context.Context, path, format string, pf *pathFlags, limit int64) (string, int64, error) {
	img, err := openImage(path, format, pf)
	if err != nil {
		return "", 0, err
	}
	defer img.Close()
	n := img.Size()
	if limit >= 0 {
		if limit > n {
			return "", 0, failed(errBadRequest, fmt.Errorf("--size %d is larger than the image (%d bytes)", limit, n))
		}
		n = limit
	}
	h := sha256.New()
	buf := make([]byte, imgcopy.ChunkSize)
	// What the image maps as zero is hashed from a zeroed buffer, never
	// read; hashing itself still costs in proportion to n (sha256 has no
	// shortcut for zeros).
	err = imgcopy.Ranges(ctx, img, n, func(off, k int64, zero bool) error {
		if !zero {
			b := buf[:k]
			if _, err := img.ReadAt(b, off); err != nil && err != io.EOF {
				return err
			}
			h.Write(b)
			return nil
		}
		clear(buf)
		for ; k > 0; k -= int64(len(buf)) {
			if err := context.Cause(ctx); err != nil {
				return err
			}
			h.Write(buf[:min(k, int64(len(buf)))])
		}
		return nil
	})
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
