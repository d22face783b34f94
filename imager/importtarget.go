package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// openTarget opens the job's target for an image of size bytes (-1 when
// unknown), after checking that it fits.
func (j *importJob) openTarget(size int64) (target.Target, error) {
	if j.out != nil {
		return nil, errors.New("internal error: a second target")
	}
	path, block, err := j.targetPath()
	if err != nil {
		return nil, err
	}
	if j.size > 0 {
		if size > j.size {
			return nil, failed(errBadRequest, fmt.Errorf("--size %d is smaller than the source's virtual size %d", j.size, size))
		}
		size = j.size
	}
	if size >= 0 {
		j.res.VirtualSize = size
	}
	j.prog.SetTotal(size)
	o := j.targetOptions(path, block)
	if j.targetFormat == "vmdk" {
		o.Format, o.VMDK = target.VMDK, j.vmdkOpts.create(size, "", nil)
	}
	t, err := target.Open(path, size, o)
	if err != nil {
		var small *target.TooSmallError
		if errors.As(err, &small) {
			return nil, err
		}
		return nil, target.MarkOpen(fmt.Errorf("target %s: %w", path, err))
	}
	j.out, j.outPath, j.outSize, j.outBlock = t, path, size, block
	return t, nil
}

func (j *importJob) targetOptions(path string, block bool) target.Options {
	return target.Options{Block: block, Zero: j.zero, Sync: j.sync, Level: j.level,
		Fits: true, Overhead: j.overhead, Reclaim: target.AllocatedBytes(path), MaxSize: j.maxSize}
}

// spoolLimit is the most a source spooled for the target may hold: the
// file of the largest disk the target takes (-1: no limit). A source that
// passes it fails TargetTooSmall while it is spooled, before it can fill
// the scratch space.
func (j *importJob) spoolLimit() (int64, error) {
	path, block, err := j.targetPath()
	if err != nil {
		return 0, err
	}
	n, err := target.Capacity(path, j.targetOptions(path, block))
	if err != nil || n == math.MaxInt64 {
		return -1, err
	}
	return jobapi.DiskBytes(n), nil
}

// zeroGap makes [from, to) read zeros where the target may hold old data
// (a block device); elsewhere it stays a hole.
func zeroGap(t target.Target, from, to int64) error {
	if to <= from {
		return nil
	}
	return targetErr(t.Zero(from, to-from))
}

// finishTarget completes the target after an import that returned err; on
// failure nothing that looks complete is left behind.
func (j *importJob) finishTarget(err error) error {
	if err != nil {
		j.out.Abort()
		return err
	}
	return j.out.Finish(j.outSize)
}

// targetPath is the file (or device) an import writes.
func (j *importJob) targetPath() (path string, block bool, err error) {
	fi, err := os.Stat(j.target)
	if err != nil {
		return "", false, target.MarkOpen(fmt.Errorf("target: %w", err))
	}
	switch {
	case j.targetMode == "block" || j.targetMode == "auto" && fi.Mode()&os.ModeDevice != 0:
		if j.targetFormat != "raw" {
			return "", false, failed(errBadRequest, errors.New("a block target takes --target-format raw"))
		}
		if fi.IsDir() {
			return "", false, failed(errBadRequest, fmt.Errorf("--target-mode block: %s is a directory", j.target))
		}
		return j.target, true, nil
	case !fi.IsDir():
		return "", false, failed(errBadRequest, fmt.Errorf("target %s is neither a directory nor a block device", j.target))
	}
	name := j.targetName
	if name == "" {
		name = "disk.img"
		if j.targetFormat == "vmdk" {
			name = "disk.vmdk"
		}
	}
	if name != filepath.Base(name) || name == "." || name == ".." {
		return "", false, failed(errBadRequest, fmt.Errorf("--target-name %q: want a plain file name", name))
	}
	return filepath.Join(j.target, name), false, nil
}

// targetErr says an error came from writing the target.
func targetErr(err error) error {
	if err == nil {
		return nil
	}
	return target.Mark(fmt.Errorf("target: %w", err))
}
