// Package target writes a disk's content where an imager command puts it:
// a raw file, a block device, or a VMDK, all behind one Target. A target
// is built so that an interrupted write never leaves something that looks
// finished: files under a temporary name, renamed into place by Finish.
//
// Errors from a target are *Error, so the command's one classifier can
// tell the target's EACCES or ENOENT from the source's.
package target

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// Target is a disk being written.
type Target interface {
	// WriteAt writes guest data. Writes must come in ascending order when
	// Ordered says so.
	io.WriterAt
	// Zero makes [off, off+n) read zeros: a no-op where the target was
	// created empty, real work on a device that may hold old data.
	Zero(off, n int64) error
	// HoleUnit is the size of aligned all-zero blocks that are not written
	// as data (they become holes, unallocated grains or Zero calls).
	HoleUnit() int
	// Ordered: the target is a stream, data must arrive in ascending order.
	Ordered() bool
	// Path is the file or device written.
	Path() string
	// Finish completes the target: size is the disk's final virtual size,
	// which a raw file is cut to (-1: as written). On failure nothing that
	// looks complete is left behind.
	Finish(size int64) error
	// Abort removes what was written after a failed copy (a device keeps
	// what it has).
	Abort()
	// Describe adds what the finished target holds to r.
	Describe(r *jobapi.Result)
}

// Format is what a target holds.
type Format int

const (
	Raw Format = iota
	VMDK
)

// Options say how a target is opened.
type Options struct {
	Format Format
	// Block: path is a device, or a regular file written as one (in
	// place, never truncated); raw only.
	Block bool
	// Zero: how zero ranges reach a device.
	Zero ZeroMode
	// Sync makes the finished target durable (fsync) before Finish returns.
	Sync bool
	// VMDK is the image to create (its Size is set by Open); Level the
	// zlib level of a streamOptimized one.
	VMDK  vmdk.CreateOptions
	Level int
	// Fits, when set, refuses a Filesystem target whose volume cannot hold
	// the disk (CheckFits) before anything is written; Overhead and
	// Reclaim are CheckFits's.
	// A source of unknown size is held to the same while it is written.
	Fits     bool
	Overhead float64
	Reclaim  int64
	// MaxSize, when set, is the largest virtual size the disk may have.
	MaxSize int64
}

// Open opens path for a disk of size bytes (-1: unknown, raw only), after
// checking that it fits; the target refuses writes past what it can hold.
func Open(path string, size int64, o Options) (Target, error) {
	lim, v, err := fileLimit(path, o)
	if err != nil {
		return nil, err
	}
	if v != nil && size >= 0 {
		if err := v.fits(size, o.Overhead); err != nil {
			return nil, err // the refusal that says how big the PVC must be
		}
	}
	if size >= 0 {
		if err := lim.check(size); err != nil {
			return nil, err
		}
	}
	t, err := open(path, size, o)
	if err != nil {
		return nil, err
	}
	if b, ok := t.(*blockDevice); ok {
		lim = lim.min(deviceLimit(b.size))
	}
	if lim.n == noLimit.n {
		return t, nil
	}
	return &limited{Target: t, limit: lim}, nil
}

func open(path string, size int64, o Options) (Target, error) {
	switch {
	case o.Block:
		return openBlock(path, size, o)
	case o.Format == VMDK:
		return openVMDK(path, size, o)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeDevice != 0 {
		return openBlock(path, size, o)
	}
	return openFile(path, size, o)
}

// Error marks an error from creating or writing the target. The errno
// alone does not say which side failed: EACCES on the target means it is
// not writable, on the source that imager may not read it; ENOENT on the
// target is a bad target path, not a missing source.
type Error struct {
	// Open: the target could not be opened or created at all.
	Open bool
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Mark makes err the target's (nil stays nil).
func Mark(err error) error {
	var te *Error
	if err == nil || errors.As(err, &te) {
		return err
	}
	return &Error{Err: err}
}

// MarkOpen makes err the target's, from opening or creating it.
func MarkOpen(err error) error {
	var te *Error
	if err == nil {
		return nil
	}
	if errors.As(err, &te) {
		te.Open = true
		return err
	}
	return &Error{Open: true, Err: err}
}

// TooSmallError says the target cannot hold the disk, and how big it must
// be; Err is the ENOSPC it explains, if any.
type TooSmallError struct {
	Msg string
	Err error
}

func (e *TooSmallError) Error() string { return e.Msg }
func (e *TooSmallError) Unwrap() error { return e.Err }

func tooSmall(format string, a ...any) error {
	return &TooSmallError{Msg: fmt.Sprintf(format, a...)}
}
