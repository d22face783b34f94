package target

import (
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sysSyncFileRange is sync_file_range(2); a file that has no write-out to
// start (a pipe, a filesystem without it, a kernel or sandbox without the
// call) is errNoSyncFileRange, its errno kept: a wait's EINVAL or
// EOPNOTSUPP may instead be a write the device refused (BLK_STS_INVAL,
// BLK_STS_NOTSUPP), which writeOut.sync tells apart.
func sysSyncFileRange(fd int, off, n int64, flags int) error {
	err := unix.SyncFileRange(fd, off, n, flags)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ESPIPE) || errors.Is(err, unix.EOPNOTSUPP) {
		return unsupportedError{err}
	}
	return err
}

// sysExchange swaps the files at a and b in one step (renameat2
// RENAME_EXCHANGE); errNoExchange where the filesystem cannot.
func sysExchange(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return errNoExchange
	}
	return err
}

// The FIEMAP ioctl's request and flags (linux/fiemap.h).
const (
	fsIocFiemap     = 0xc020660b
	fiemapLast      = 0x1
	fiemapUnknown   = 0x2
	fiemapDelalloc  = 0x4
	fiemapBatch     = 128 // extents asked per call
	fiemapMaxCalls  = 64  // a file of more extents is not looked through
	fiemapExtentLen = 56
)

// sysDropCache drops the page cache of the file at path (the output about
// to be replaced: of no use, and only freed when it is removed at Finish,
// so the copy would reclaim other pages for its own meanwhile), unless
// some of it may wait for write-out: POSIX_FADV_DONTNEED would start that
// write-out, of a file about to go, where removing it drops the pages
// unwritten. A file FIEMAP cannot look through is left alone.
func sysDropCache(path string) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return
	}
	if pending, ok := delalloc(f); !ok || pending {
		return
	}
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// delalloc says whether f has extents not yet allocated or of unknown
// place (dirty pages the filesystem has not written out); ok is false
// where FIEMAP cannot tell.
func delalloc(f *os.File) (pending, ok bool) {
	buf := make([]byte, 32+fiemapBatch*fiemapExtentLen)
	var start uint64
	for range fiemapMaxCalls {
		clear(buf)
		binary.NativeEndian.PutUint64(buf[0:], start)
		binary.NativeEndian.PutUint64(buf[8:], ^uint64(0)-start)
		binary.NativeEndian.PutUint32(buf[24:], fiemapBatch) // no FIEMAP_FLAG_SYNC: that would write it out
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
			return false, false
		}
		n := int(binary.NativeEndian.Uint32(buf[20:]))
		if n == 0 {
			return false, true
		}
		for i := range min(n, fiemapBatch) {
			e := buf[32+i*fiemapExtentLen:]
			flags := binary.NativeEndian.Uint32(e[40:])
			if flags&(fiemapDelalloc|fiemapUnknown) != 0 {
				return true, true
			}
			if flags&fiemapLast != 0 {
				return false, true
			}
			start = binary.NativeEndian.Uint64(e[0:]) + binary.NativeEndian.Uint64(e[16:])
		}
	}
	return false, false
}
