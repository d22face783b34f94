package main

import (
	"context"
	"errors"
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
	if err := seSparseReadOnly(d, err); err != nil {
		d.Close()
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

// seSparseReadOnly explains the refusal to write into a seSparse extent:
// vmdk reads them but never writes them (ESXi owns its snapshots, and a
// write here would race the host that keeps their journal), so saying
// only "extent is SESPARSE" leaves the user nothing to do. err is the
// write's error (nil: checked before writing). Extents of d's own that are
// seSparse give the explanation, whatever err is.
func seSparseReadOnly(d *vmdk.Disk, err error) error {
	for _, e := range d.Extents() {
		if e.Type == vmdk.ExtentSESparse {
			return fmt.Errorf("%s: %w: extent %q is seSparse: seSparse extents are read-only here (snapshots ESXi owns and writes); flatten the chain into a new image first (imager convert or flatten, or import it into a VMDKImage) and write that", d.Path(), vmdk.ErrReadOnly, e.File)
		}
	}
	return err
}

// commitReadOnly explains a commit refused because the image, or the
// parent it commits into, has seSparse extents (err: Commit's error).
func commitReadOnly(path string, o vmdk.Options, err error) error {
	if !errors.Is(err, vmdk.ErrReadOnly) {
		return err
	}
	d, oerr := vmdk.Open(path, o)
	if oerr != nil {
		return err
	}
	defer d.Close()
	if p := d.Parent(); p != nil {
		if perr := seSparseReadOnly(p, nil); perr != nil {
			return fmt.Errorf("commit into %s: %w", p.Path(), perr)
		}
	}
	return seSparseReadOnly(d, err)
}
