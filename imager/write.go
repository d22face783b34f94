package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"

	imgcopy "github.com/vmdkpop/vmdkpop/imager/internal/copy"
	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// runWrite writes a pattern into a VMDK, like qemu-io's write -P: for
// tests, demos and seeding images with known content.
func runWrite(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("write", flag.ContinueOnError)
	pattern := fs.Int("P", 0xcd, "byte value to write")
	seed := fs.Int64("random", -1, "write pseudo-random bytes from this seed instead of -P")
	resultFile := resultFlag(fs)
	var pf pathFlags
	pf.register(fs)
	pos, err := parseArgs(fs, args, 3)
	if err != nil {
		return err
	}
	off, err1 := parseSize(pos[0])
	n, err2 := parseSize(pos[1])
	if pos[0] == "0" {
		off, err1 = 0, nil
	}
	if err1 != nil || err2 != nil {
		return usagef("OFFSET %q and LENGTH %q: want sizes (e.g. 1M; OFFSET may be 0)", pos[0], pos[1])
	}
	if *pattern < 0 || *pattern > 255 {
		return usagef("-P %d: want a byte value", *pattern)
	}
	o := pf.options()
	o.ReadWrite = true
	err = writePattern(ctx, pos[2], o, off, n, byte(*pattern), *seed)
	return withResult("write", *resultFile, pos[2], &pf, err)
}

// writePattern writes into the image at path, which is the command's
// target: its errors are the target's.
func writePattern(ctx context.Context, path string, o vmdk.Options, off, n int64, pattern byte, seed int64) error {
	d, err := vmdk.Open(path, o)
	if err != nil {
		return target.Mark(err)
	}
	if off+n > d.Size() {
		d.Close()
		return failed(errBadRequest, fmt.Errorf("bytes %d-%d are past the disk's end (%d)", off, off+n, d.Size()))
	}
	buf := make([]byte, min(n, imgcopy.ChunkSize))
	var rng *rand.ChaCha8
	if seed >= 0 {
		var key [32]byte
		copy(key[:], strconv.FormatInt(seed, 10))
		rng = rand.NewChaCha8(key)
	} else {
		for i := range buf {
			buf[i] = pattern
		}
	}
	for done := int64(0); done < n && err == nil; {
		if err = context.Cause(ctx); err != nil {
			break
		}
		b := buf[:min(int64(len(buf)), n-done)]
		if rng != nil {
			rng.Read(b)
		}
		_, err = d.WriteAt(b, off+done)
		done += int64(len(b))
	}
	if err == nil {
		err = d.Flush()
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return target.Mark(err)
}
