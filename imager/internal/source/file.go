package source

import (
	"fmt"
	"os"
)

// OpenError is a local source that could not be opened. The errno says
// why; one no retry changes (ENOTDIR, ELOOP) is as good as not found.
type OpenError struct{ Err error }

func (e *OpenError) Error() string { return e.Err.Error() }
func (e *OpenError) Unwrap() error { return e.Err }

// OpenFile opens a local source: a regular file or a block device, read in
// place at random offsets.
func OpenFile(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &OpenError{err}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if m := fi.Mode(); !m.IsRegular() && m&os.ModeDevice == 0 {
		f.Close()
		return nil, invalid(fmt.Errorf("%s is not a regular file or block device", path))
	}
	return f, nil
}
