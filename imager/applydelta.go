package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// apply-delta brings a raw disk populated from a VMDK image to the point
// of a delta of that image (what a delta import wrote): it writes only
// the delta's own ranges (data, and zeros where it has zeroed grains),
// and leaves every other byte of the target as it is, since there the
// delta reads as its parent, which the target already holds.

// applyDelta is one run of `imager apply-delta`.
type applyDelta struct {
	ctx        context.Context
	delta      string
	target     string
	resultFile string
	expectCID  uint32
	expect     bool // --expect-parent-cid given
	sync       bool
	paths      pathFlags
	res        jobapi.Result
}

func runApplyDelta(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, err := parseApplyDelta(args)
	if err != nil {
		return err
	}
	a.ctx = ctx
	err = a.run()
	code := settle(&a.res, err, fmt.Sprintf("applied %s to %s: %d bytes written in %d ranges", a.delta, a.target, a.res.BytesWritten, a.res.Ranges))
	if a.resultFile != "" {
		if werr := jobapi.Write(a.resultFile, &a.res); werr != nil {
			fmt.Fprintf(stderr, "imager apply-delta: result file: %v\n", werr)
		}
	}
	if code == 0 {
		fmt.Fprintln(stdout, a.res.Message)
		return nil
	}
	return &exitError{code: code, msg: "imager apply-delta: " + a.res.Message}
}

// parseApplyDelta reads apply-delta's command line; its errors are usage
// errors.
func parseApplyDelta(args []string) (*applyDelta, error) {
	a := &applyDelta{}
	fs := flag.NewFlagSet("apply-delta", flag.ContinueOnError)
	fs.StringVar(&a.target, "target", "", "the raw disk to bring to the delta's point: a file (disk.img) or a block device, populated from the delta's parent")
	cid := fs.String("expect-parent-cid", "", "refuse a delta whose parentCID is not this (8 hex digits): the CID of the image the target was populated from")
	cache := fs.String("t", "writeback", "writeback (fsync before success) or unsafe")
	resultFile := resultFlag(fs)
	a.paths.register(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return nil, err
	}
	a.delta, a.resultFile = pos[0], *resultFile
	if a.target == "" {
		return nil, usagef("--target is required")
	}
	if *cache != "writeback" && *cache != "unsafe" {
		return nil, usagef("-t %q: want writeback or unsafe", *cache)
	}
	a.sync = *cache == "writeback"
	if *cid != "" {
		n, err := strconv.ParseUint(*cid, 16, 32)
		if err != nil || len(*cid) != 8 {
			return nil, usagef("--expect-parent-cid %q: want 8 hex digits, as info and the results show CIDs", *cid)
		}
		a.expectCID, a.expect = uint32(n), true
	}
	return a, nil
}

func (a *applyDelta) run() error {
	d, err := vmdk.Open(a.delta, a.paths.options())
	if err != nil {
		return err
	}
	defer d.Close()
	a.res.SourceFormat, a.res.VirtualSize = "vmdk", d.Size()
	a.res.CID, a.res.ParentCID, a.res.CreateType = fmt.Sprintf("%08x", d.CID()), fmt.Sprintf("%08x", d.ParentCID()), d.CreateType()
	switch {
	case d.Parent() == nil:
		return failed(errBadRequest, fmt.Errorf("%s has no parent: it is a whole disk, not a delta; import it instead", a.delta))
	case a.expect && d.ParentCID() != a.expectCID:
		return fmt.Errorf("%s: %w: its parentCID is %08x, but the target was populated from the image of CID %08x: it is a delta of another image (or of another version of it); import the delta of that image", a.delta, vmdk.ErrChainBroken, d.ParentCID(), a.expectCID)
	case d.ChainError() != nil:
		return fmt.Errorf("%s: %w", a.delta, d.ChainError())
	}
	// The target must not be a file the delta reads (its own, its
	// parent's extents): raw bytes written into it would corrupt the
	// chain while it is read.
	if ti, err := os.Stat(a.target); err == nil {
		for _, name := range d.Files() {
			if fi, err := os.Stat(name); err == nil && os.SameFile(ti, fi) {
				return failed(errBadRequest, fmt.Errorf("target %s is %s, a file of the delta's chain: give the raw disk populated from the delta's parent", a.target, name))
			}
		}
	}
	f, err := a.openTarget(d.Size(), d.Parent().Size())
	if err != nil {
		return err
	}
	a.res.Target, a.res.TargetFormat = a.target, "raw"
	if err := a.write(d, f); err != nil {
		f.Close()
		return err
	}
	if a.sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return targetErr(err)
		}
	}
	return targetErr(f.Close())
}

// openTarget opens the raw target for a delta of size bytes over a parent
// of parentSize: a file smaller than the delta grows (the disk grew
// between the two snapshots: what it gains reads as zeros in both), a
// device must hold it. A target smaller than the parent was not populated
// from it: growing it would make zeros of the parent's bytes it lacks.
func (a *applyDelta) openTarget(size, parentSize int64) (*os.File, error) {
	f, err := os.OpenFile(a.target, os.O_RDWR, 0)
	if err != nil {
		return nil, target.MarkOpen(fmt.Errorf("target %s: %w", a.target, err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, target.MarkOpen(fmt.Errorf("target %s: %w", a.target, err))
	}
	block := fi.Mode()&os.ModeDevice != 0
	have := fi.Size()
	switch {
	case block:
		if have, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, target.MarkOpen(fmt.Errorf("target %s: size: %w", a.target, err))
		}
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, failed(errBadRequest, fmt.Errorf("target %s is neither a file nor a block device", a.target))
	}
	if have < parentSize {
		f.Close()
		return nil, failed(errBadRequest, fmt.Errorf("target %s holds %d bytes, less than the %d of the delta's parent: it was not populated from the parent; populate it from the parent first", a.target, have, parentSize))
	}
	if have >= size {
		return f, nil
	}
	if block {
		f.Close()
		return nil, &target.TooSmallError{Msg: fmt.Sprintf("target %s holds %d bytes, the delta's disk is %d: give a device of at least %d bytes", a.target, have, size, size)}
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, target.VolumeTooSmall(targetErr(fmt.Errorf("grow to %d bytes: %w", size, err)), filepath.Dir(a.target), size)
	}
	return f, nil
}

// write copies the delta's own ranges (depth 0) into f.
func (a *applyDelta) write(d *vmdk.Disk, f *os.File) error {
	n, err := copyOwnRanges(a.ctx, d, a.delta, 1, f, nil)
	a.res.Ranges += n.Ranges
	a.res.BytesWritten += n.Written
	return err
}
