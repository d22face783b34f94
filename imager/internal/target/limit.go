package target

import (
	"fmt"
	"io"
	"math"
	"os"
	"syscall"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// A source whose size is not known until it ends (stdin, gzip, zstd, an
// HTTP body without Content-Length) cannot be checked against the target
// before the copy. Its disk is bounded while it is written instead: every
// write, zero range and final size is checked against the smallest of the
// target's limits (--max-size, the device's size, what the volume can hold
// as a disk file), and the first to pass one fails as *TooSmallError at
// once, before the volume fills up. A source of known size meets the same
// limits up front, in Open.

// limit is the largest virtual size a target takes, and what to say about
// a disk that goes past it.
type limit struct {
	n      int64
	tooBig func(end int64) error
}

var noLimit = limit{n: math.MaxInt64}

// min is the tighter of l and o.
func (l limit) min(o limit) limit {
	if o.n < l.n {
		return o
	}
	return l
}

// check fails once a disk reaches end bytes past the limit.
func (l limit) check(end int64) error {
	if end > l.n {
		return l.tooBig(end)
	}
	return nil
}

func maxSizeLimit(n int64) limit {
	return limit{n: n, tooBig: func(end int64) error {
		return tooSmall("the disk's virtual size reaches %s (%d bytes), past the largest allowed, %s (%d bytes, --max-size)", human(end), end, human(n), n)
	}}
}

func deviceLimit(n int64) limit {
	return limit{n: n, tooBig: func(end int64) error {
		return tooSmall("the device has %s (%d bytes) but the disk goes on past them (to byte %d at least): the volume must be bigger", human(n), n, end)
	}}
}

// volumeLimit: v can hold a disk file of v.largest() virtual bytes. Past
// it, the rule of ENOSPC (VolumeTooSmall) applies before the volume is
// full: a disk the whole volume could hold meets ENOSPC (NoSpace, a
// retry may find the other files gone), a bigger one TargetTooSmall.
func volumeLimit(v volume, overhead float64) limit {
	return limit{n: v.largest(), tooBig: func(end int64) error {
		if need := jobapi.DiskBytes(end); need <= v.capacity {
			return Mark(fmt.Errorf("%s: %w: the disk (of a size not known in advance) reaches a virtual size of %s (%d bytes), %s with its metadata, but the volume had %s available of its %s: other files hold the rest",
				v.dir, syscall.ENOSPC, human(end), end, human(need), human(v.avail), human(v.capacity)))
		}
		return tooSmall("%s: the disk (of a size not known in advance) reaches a virtual size of %s (%d bytes), %s with its metadata, but the volume had %s available: the PVC must be at least %s (%.0f%% kept for the filesystem), more if the source goes on",
			v.dir, human(end), end, human(jobapi.DiskBytes(end)), human(v.avail), human(v.pvc(end, overhead)), overhead*100)
	}}
}

// limited is a Target held to a limit.
type limited struct {
	Target
	limit limit
}

func (l *limited) WriteAt(p []byte, off int64) (int, error) {
	if err := l.limit.check(off + int64(len(p))); err != nil {
		return 0, err
	}
	return l.Target.WriteAt(p, off)
}

func (l *limited) Zero(off, n int64) error {
	if err := l.limit.check(off + n); err != nil {
		return err
	}
	return l.Target.Zero(off, n)
}

// Finish refuses a final size past the limit, removing what was written:
// nothing that looks complete is left.
func (l *limited) Finish(size int64) error {
	if err := l.limit.check(size); err != nil {
		l.Target.Abort()
		return err
	}
	return l.Target.Finish(size)
}

// fileLimit is the limit of a target at path known before it is opened:
// --max-size, and for a Filesystem target with Fits what its volume holds
// once earlier attempts' temporaries are gone (v, nil otherwise).
func fileLimit(path string, o Options) (limit, *volume, error) {
	lim := noLimit
	if o.MaxSize > 0 {
		lim = maxSizeLimit(o.MaxSize)
	}
	if o.Block {
		return lim, nil, nil
	}
	removeStale(path) // before the space is counted
	if !o.Fits {
		return lim, nil, nil
	}
	v, err := statVolume(dirOf(path), o.Reclaim)
	if err != nil {
		return limit{}, nil, err
	}
	return lim.min(volumeLimit(v, o.Overhead)), &v, nil
}

// Capacity is the largest virtual size a disk written to path with o may
// have (math.MaxInt64: no limit): what a source spooled before its target
// is opened is held to.
func Capacity(path string, o Options) (int64, error) {
	lim, _, err := fileLimit(path, o)
	if err != nil {
		return 0, err
	}
	if fi, serr := os.Stat(path); o.Block || serr == nil && fi.Mode()&os.ModeDevice != 0 {
		f, err := openDevice(path, os.O_RDONLY) // a FIFO must not block open(2)
		if err != nil {
			return 0, MarkOpen(err)
		}
		n, err := f.Seek(0, io.SeekEnd)
		f.Close()
		if err != nil {
			return 0, MarkOpen(err)
		}
		lim = lim.min(deviceLimit(n))
	}
	return lim.n, nil
}
