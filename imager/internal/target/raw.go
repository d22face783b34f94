package target

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

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// rawHoleUnit: zero runs of this size become holes in raw files (qemu-img's -S 4k).
const rawHoleUnit = 4 << 10

// ZeroMode says how zero ranges reach a block device, which (unlike a new
// file) may hold old data.
type ZeroMode string

const (
	// ZeroProbe reads the device and writes zeros only where it does not
	// already read zeros: thin and fresh volumes are left untouched.
	ZeroProbe ZeroMode = "probe"
	// ZeroSkip trusts the device to read zeros everywhere (never writes them).
	ZeroSkip ZeroMode = "skip"
	// ZeroWrite zeroes every zero range (BLKZEROOUT, else plain writes):
	// for devices that read back old data.
	ZeroWrite ZeroMode = "write"
)

func (m *ZeroMode) String() string { return string(*m) }

// Set makes ZeroMode a flag.Value.
func (m *ZeroMode) Set(s string) error {
	switch ZeroMode(s) {
	case ZeroProbe, ZeroSkip, ZeroWrite:
		*m = ZeroMode(s)
		return nil
	}
	return fmt.Errorf("want probe, skip or write")
}

// rawFile is raw output into a regular file, built empty beside its path
// (so untouched ranges stay holes) and renamed into place by Finish.
type rawFile struct {
	f     *os.File
	final string
	sync  bool
	out   *writeOut // nil unless sync
}

func openFile(path string, size int64, o Options) (*rawFile, error) {
	f, err := os.CreateTemp(filepath.Dir(path), tempPattern(path, tempFileSuffix))
	if err != nil {
		return nil, MarkOpen(err)
	}
	lockTemp(f) // without flock, a later attempt leaves it alone
	dropCache(path)
	// Size the file now (a hole, no space used) so that a disk larger
	// than the filesystem's largest file (EFBIG: ext4's 16 TiB - 4 KiB) is
	// refused before the copy, not by Finish after it.
	if size > 0 {
		if err := f.Truncate(size); err != nil {
			f.Close()
			os.Remove(f.Name())
			return nil, MarkOpen(fmt.Errorf("the image's virtual size is %s (%d bytes), more than a file on this filesystem can hold: %w", human(size), size, err))
		}
	}
	return &rawFile{f: f, final: path, sync: o.Sync, out: newWriteOut(f, o.Sync)}, nil
}

func (t *rawFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := t.f.WriteAt(p, off)
	if err == nil {
		err = t.out.wrote(off, int64(n))
	}
	return n, Mark(err)
}

// Zero leaves a hole (the file was created empty), which needs no
// write-out: it only moves the write-out's watermark.
func (t *rawFile) Zero(off, n int64) error { return Mark(t.out.wrote(off, n)) }
func (t *rawFile) HoleUnit() int           { return rawHoleUnit }
func (t *rawFile) Ordered() bool           { return false }
func (t *rawFile) Path() string            { return t.final }

// Finish cuts the file to size (where a disk too large for the
// filesystem fails, EFBIG), syncs it and moves it into place (replace).
func (t *rawFile) Finish(size int64) error {
	var err error
	if size >= 0 {
		err = t.f.Truncate(size)
	}
	if werr := t.out.stop(); err == nil {
		err = werr
	}
	if err == nil && t.sync {
		err = syncFile(t.f)
	}
	if cerr := t.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(t.f.Name(), 0o644)
	}
	if err == nil {
		err = replace(t.f.Name(), t.final)
	}
	if err != nil {
		os.Remove(t.f.Name())
		return Mark(err)
	}
	if !t.sync {
		// -t unsafe is qemu-img's no-flush mode: the directory's fsync
		// makes a device flush (0.3 s at times here) for a rename whose
		// data is not on disk anyway.
		return nil
	}
	return Mark(syncDir(filepath.Dir(t.final)))
}

func (t *rawFile) Abort() {
	t.out.stop()
	t.f.Close()
	os.Remove(t.f.Name())
}

func (t *rawFile) Describe(r *jobapi.Result) { r.AllocatedBytes = AllocatedBytes(t.final) }

// blockDevice is raw output written in place: a device, or a regular file
// treated as one (never truncated).
type blockDevice struct {
	f    *os.File
	size int64 // the device's
	mode ZeroMode
	sync bool
	out  *writeOut // nil unless sync
}

// openDevice opens a block target (a device, or a file written as one)
// without blocking on a FIFO in its place. What is neither a regular file
// nor a block device is a target error, not an unsupported image.
func openDevice(path string, flag int) (*os.File, error) {
	f, err := vmdk.OpenDataFile(path, flag)
	if errors.Is(err, vmdk.ErrUnsupported) {
		return nil, errors.New("not a regular file or block device")
	}
	return f, err
}

func openBlock(path string, size int64, o Options) (*blockDevice, error) {
	f, err := openDevice(path, os.O_RDWR)
	if err != nil {
		return nil, MarkOpen(err)
	}
	devSize, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, MarkOpen(err)
	}
	if size > devSize {
		f.Close()
		return nil, tooSmall("the device has %s (%d bytes) but the image's virtual size is %s (%d bytes): the volume must be at least that big", human(devSize), devSize, human(size), size)
	}
	mode := o.Zero
	if mode == "" {
		mode = ZeroProbe
	}
	return &blockDevice{f: f, size: devSize, mode: mode, sync: o.Sync, out: newWriteOut(f, o.Sync)}, nil
}

func (t *blockDevice) WriteAt(p []byte, off int64) (int, error) {
	n, err := t.f.WriteAt(p, off)
	if err == nil {
		err = t.out.wrote(off, int64(n))
	}
	return n, Mark(err)
}

func (t *blockDevice) HoleUnit() int { return rawHoleUnit }
func (t *blockDevice) Ordered() bool { return false }
func (t *blockDevice) Path() string  { return t.f.Name() }

func (t *blockDevice) Finish(size int64) error {
	err := t.out.stop()
	if err == nil && t.sync {
		err = syncFile(t.f)
	}
	if cerr := t.f.Close(); err == nil {
		err = cerr
	}
	return Mark(err)
}

func (t *blockDevice) Abort() {
	t.out.stop()
	t.f.Close()
}

func (t *blockDevice) Describe(r *jobapi.Result) { r.AllocatedBytes = AllocatedBytes(t.f.Name()) }

var (
	zeros     = make([]byte, 4<<20)
	probePool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}
)

// Zero makes [off, off+n) of the device read zeros.
func (t *blockDevice) Zero(off, n int64) error {
	if err := t.zero(off, n); err != nil {
		return err
	}
	return Mark(t.out.wrote(off, n))
}

func (t *blockDevice) zero(off, n int64) error {
	switch t.mode {
	case ZeroSkip:
		return nil
	case ZeroWrite:
		return Mark(zeroOut(t.f, off, n))
	}
	bp := probePool.Get().(*[]byte)
	defer probePool.Put(bp)
	for end := off + n; off < end; {
		b := (*bp)[:min(int64(len(*bp)), end-off)]
		if _, err := t.f.ReadAt(b, off); err != nil && err != io.EOF {
			return Mark(fmt.Errorf("read device at byte %d: %w", off, err))
		}
		if !bytes.Equal(b, zeros[:len(b)]) {
			if err := zeroOut(t.f, off, int64(len(b))); err != nil {
				return Mark(err)
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
		k := min(int64(len(zeros)), end-off)
		if _, err := f.WriteAt(zeros[:k], off); err != nil {
			return err
		}
		off += k
	}
	return nil
}
