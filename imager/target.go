package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"unsafe"

	"github.com/vmdkpop/vmdkpop/imager/result"
)

// zeroMode says how zero ranges reach a block device, which (unlike a new
// file) may hold old data.
type zeroMode string

const (
	// zeroProbe reads the device and writes zeros only where it does not
	// already read zeros: thin and fresh volumes are left untouched.
	zeroProbe zeroMode = "probe"
	// zeroSkip trusts the device to read zeros everywhere (never writes them).
	zeroSkip zeroMode = "skip"
	// zeroWrite zeroes every zero range (BLKZEROOUT, else plain writes):
	// for devices that read back old data.
	zeroWrite zeroMode = "write"
)

func (m *zeroMode) String() string { return string(*m) }
func (m *zeroMode) Set(s string) error {
	switch zeroMode(s) {
	case zeroProbe, zeroSkip, zeroWrite:
		*m = zeroMode(s)
		return nil
	}
	return fmt.Errorf("want probe, skip or write")
}

// rawTarget is raw output being written: a regular file built under a
// temporary name and renamed into place by finish, or a block device (or a
// file treated as one) written in place.
type rawTarget struct {
	copyTarget
	f     *os.File
	block bool
	final string // file targets: the name finish renames to
	mode  zeroMode
}

// openRawTarget opens path for raw output of size bytes (size < 0:
// unknown). A block device must hold size bytes; a regular file is built
// empty beside path, so untouched ranges stay holes.
func openRawTarget(path string, size int64, mode zeroMode) (*rawTarget, error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeDevice != 0 {
		return openBlockTarget(path, size, mode)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".partial-*")
	if err != nil {
		return nil, targetOpenErr(err)
	}
	return &rawTarget{copyTarget: copyTarget{dst: f, holeUnit: rawHoleUnit}, f: f, final: path}, nil
}

// openBlockTarget opens a device, or a regular file used as one (written
// in place, never truncated), for size bytes of raw content.
func openBlockTarget(path string, size int64, mode zeroMode) (*rawTarget, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, targetOpenErr(err)
	}
	devSize, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, targetOpenErr(err)
	}
	if size > devSize {
		f.Close()
		return nil, &tooSmallError{msg: fmt.Sprintf("the device has %s (%d bytes) but the image's virtual size is %s (%d bytes): the volume must be at least that big", human(devSize), devSize, human(size), size)}
	}
	t := &rawTarget{copyTarget: copyTarget{dst: f, holeUnit: rawHoleUnit}, f: f, block: true, mode: mode}
	if mode != zeroSkip {
		t.zero = t.zeroRange
	}
	return t, nil
}

// tooSmallError says the target cannot hold the image, and how big it must
// be; err is the ENOSPC it explains, if any.
type tooSmallError struct {
	msg string
	err error
}

func (e *tooSmallError) Error() string { return e.msg }
func (e *tooSmallError) Unwrap() error { return e.err }

var probePool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// zeroRange makes [off, off+n) of a block target read zeros.
func (t *rawTarget) zeroRange(off, n int64) error {
	if t.mode == zeroWrite {
		return zeroOut(t.f, off, n)
	}
	bp := probePool.Get().(*[]byte)
	defer probePool.Put(bp)
	for end := off + n; off < end; {
		b := (*bp)[:min(int64(len(*bp)), end-off)]
		if _, err := t.f.ReadAt(b, off); err != nil && err != io.EOF {
			return onTarget(fmt.Errorf("read device at byte %d: %w", off, err))
		}
		if !bytes.Equal(b, zeroChunk[:len(b)]) {
			if err := zeroOut(t.f, off, int64(len(b))); err != nil {
				return err
			}
		}
		off += int64(len(b))
	}
	return nil
}

const blkZeroOut = 0x127f // _IO(0x12, 127)

// zeroOut zeroes a range: BLKZEROOUT lets the device do it (discarding
// where it can); plain writes are the fallback.
func zeroOut(f *os.File, off, n int64) error {
	if off%512 == 0 && n%512 == 0 {
		r := [2]uint64{uint64(off), uint64(n)}
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), blkZeroOut, uintptr(unsafe.Pointer(&r))); e == 0 {
			return nil
		}
	}
	for end := off + n; off < end; {
		k := min(int64(len(zeroChunk)), end-off)
		if _, err := f.WriteAt(zeroChunk[:k], off); err != nil {
			return err
		}
		off += k
	}
	return nil
}

// finish completes the target after a copy that returned err: on success
// a file is cut to size (where a disk too large for the filesystem fails,
// EFBIG), synced (with sync) and renamed into place; on failure the
// temporary file is removed. Its own errors are the target's.
func (t *rawTarget) finish(err error, size int64, sync bool) error {
	if err == nil && !t.block && size >= 0 {
		err = onTarget(t.f.Truncate(size))
	}
	if err == nil && sync {
		err = onTarget(t.f.Sync())
	}
	if cerr := t.f.Close(); err == nil {
		err = onTarget(cerr)
	}
	if t.block {
		return err
	}
	if err == nil {
		err = onTarget(os.Chmod(t.f.Name(), 0o644))
	}
	if err == nil {
		err = onTarget(os.Rename(t.f.Name(), t.final))
	}
	if err != nil {
		os.Remove(t.f.Name())
		return err
	}
	return onTarget(syncDir(filepath.Dir(t.final)))
}

// allocated is how many bytes the finished file occupies on disk (a block
// device: its size).
func allocatedBytes(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() {
		return st.Blocks * 512
	}
	return fi.Size()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// checkFits refuses to start when a Filesystem volume cannot hold a disk
// of virtual size bytes: a guest may fill its disk, so the file needs all
// of it (result.DiskBytes) from what the filesystem grants. The filesystem
// has already kept its own share out of that; overhead is what the PVC
// size the refusal names allows it (result.RequiredBytes, the rule the
// controllers size PVCs by). reclaim is space the import frees (a previous
// image it replaces).
func checkFits(dir string, size int64, overhead float64, reclaim int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	avail := int64(st.Bavail)*st.Bsize + reclaim
	need := result.DiskBytes(size)
	if need <= avail {
		return nil
	}
	held := max(0, (int64(st.Blocks)-int64(st.Bavail))*st.Bsize-reclaim) // other files, and what the filesystem keeps
	pvc := result.RequiredBytesOverhead(size, result.Filesystem, overhead) + held
	return &tooSmallError{msg: fmt.Sprintf("%s: the image's virtual size is %s (%d bytes), %s with its metadata, but the volume has %s available: the PVC must be at least %s (%.0f%% kept for the filesystem)",
		dir, human(size), size, human(need), human(avail), human(pvc), overhead*100)}
}

// human formats a byte count with a binary unit.
func human(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, units[i])
}
