package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/vmdkpop/vmdkpop/imager/result"
)

// sink is an import's target once its size is known: a raw file, a block
// device or a VMDK, with what finishing it takes.
type sink struct {
	copyTarget
	ordered bool // data must arrive in ascending order
	path    string
	size    int64 // raw files are cut to this size (-1: as written)
	raw     *rawTarget
	vm      *vmdkTarget
	sync    bool
}

// openSink opens the job's target for an image of size bytes (-1 when
// unknown), after checking that it fits.
func (j *importJob) openSink(size int64) (*sink, error) {
	if j.sink != nil {
		return nil, errors.New("internal error: a second target")
	}
	path, block, err := j.targetPath()
	if err != nil {
		return nil, err
	}
	if j.size > 0 {
		if size > j.size {
			return nil, permanent(result.ReasonInvalidArguments, fmt.Errorf("--size %d is smaller than the source's virtual size %d", j.size, size))
		}
		size = j.size
	}
	if size >= 0 {
		j.res.VirtualSize = size
	}
	j.prog.setTotal(size)
	s := &sink{path: path, size: size, sync: j.sync}
	switch {
	case block:
		s.raw, err = openBlockTarget(path, size, j.zero)
	default:
		if size >= 0 {
			if err := checkFits(filepath.Dir(path), size, j.overhead, allocatedBytes(path)); err != nil {
				return nil, err
			}
		}
		if j.targetFormat == "vmdk" {
			s.vm, err = openVMDKTarget(path, size, j.vmdkOpts, j.level)
		} else {
			s.raw, err = openRawTarget(path, size, j.zero)
		}
	}
	if err != nil {
		var small *tooSmallError
		if errors.As(err, &small) {
			return nil, err
		}
		return nil, targetOpenErr(fmt.Errorf("target %s: %w", path, err))
	}
	if s.raw != nil {
		s.copyTarget = s.raw.copyTarget
	} else {
		s.copyTarget, s.ordered = s.vm.copyTarget, s.vm.ordered
	}
	j.sink = s
	return s, nil
}

// zeroGap makes [from, to) read zeros where the target may hold old data
// (a block device); elsewhere it is left as a hole.
func (s *sink) zeroGap(from, to int64) error {
	if s.zero == nil || to <= from {
		return nil
	}
	return targetErr(s.zero(from, to-from))
}

// finish completes the target after an import that returned err; on
// failure nothing that looks complete is left behind.
func (s *sink) finish(err error) error {
	if s.raw != nil {
		return s.raw.finish(err, s.size, s.sync)
	}
	return s.vm.finish(err, s.sync)
}

// describe adds what the finished target holds to r.
func (s *sink) describe(r *result.Result) {
	if s.vm == nil {
		r.AllocatedBytes = allocatedBytes(s.path)
		return
	}
	describeVMDK(r, s.path, nil)
}
