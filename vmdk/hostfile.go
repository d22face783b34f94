package vmdk

import (
	"io"
	"io/fs"
	"os"
)

// hostFile is what the engine needs of a file on the host. *os.File is the
// real one; the power-loss tests substitute a file that records which
// writes a sync made durable.
type hostFile interface {
	io.ReaderAt
	io.WriterAt
	io.Writer
	io.Seeker
	Name() string
	Stat() (fs.FileInfo, error)
	Chmod(mode fs.FileMode) error
	Sync() error
	Truncate(size int64) error
	Close() error
}

// hostFS is how the engine opens, creates, renames and removes host files
// (and opens directories to sync them).
type hostFS interface {
	OpenFile(name string, flag int, perm fs.FileMode) (hostFile, error)
	CreateTemp(dir, pattern string) (hostFile, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
}

// host is the file system every Open, Create and write goes through; only
// tests replace it. OpenFS reads through its fs.FS instead (fsFiles).
var host hostFS = osFS{}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (hostFile, error) {
	f, err := openNonblocking(name, flag, perm) // never blocks on a FIFO
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return f, nil
}

func (osFS) CreateTemp(dir, pattern string) (hostFile, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (osFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error             { return os.Remove(name) }
