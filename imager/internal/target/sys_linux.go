package target

import (
	"errors"

	"golang.org/x/sys/unix"
)

// sysSyncFileRange is sync_file_range(2); a file that has no write-out to
// start (a pipe, a filesystem without it, a kernel or sandbox without the
// call) is errNoSyncFileRange.
func sysSyncFileRange(fd int, off, n int64, flags int) error {
	err := unix.SyncFileRange(fd, off, n, flags)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ESPIPE) || errors.Is(err, unix.EOPNOTSUPP) {
		return errNoSyncFileRange
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
