//go:build !linux

package target

// sysSyncFileRange: without sync_file_range, Finish's fsync does all the
// write-out.
func sysSyncFileRange(fd int, off, n int64, flags int) error { return errNoSyncFileRange }

// sysExchange: without renameat2, a replaced file is renamed over.
func sysExchange(a, b string) error { return errNoExchange }

// sysDropCache: the replaced output's page cache is left to the system.
func sysDropCache(path string) {}
