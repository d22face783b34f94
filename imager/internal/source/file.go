package source

import (
	"errors"
	"os"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// OpenError is a local source that could not be opened. The errno says
// why; one no retry changes (ENOTDIR, ELOOP) is as good as not found.
type OpenError struct{ Err error }

func (e *OpenError) Error() string { return e.Err.Error() }
func (e *OpenError) Unwrap() error { return e.Err }

// OpenFile opens a local source: a regular file or a block device, read in
// place at random offsets.
// Anything else (a FIFO, a character device, a directory) is refused as
// every image input is, by vmdk.OpenDataFile: without blocking in open(2),
// with vmdk.ErrUnsupported.
func OpenFile(path string) (*os.File, error) {
	f, err := vmdk.OpenDataFile(path, os.O_RDONLY)
	var pe *os.PathError
	if errors.As(err, &pe) {
		return nil, &OpenError{err}
	}
	return f, err
}
