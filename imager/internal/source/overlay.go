package source

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path"
	"time"
)

// With --checksum the URL's own file is read whole through the checksum
// before anything is written. Reading it again for the import (Range
// requests through HTTPFS) would import bytes nobody verified: a server
// without a validator (no ETag, no Last-Modified) cannot be held to the
// version that was hashed. So the file is kept as it was hashed, a
// descriptor in memory and a sparse delta spooled to scratch space, and
// the import reads it from there; only its siblings (extents, parents,
// which the checksum does not cover) come over HTTP.
//
// A file read in place, without a checksum, is held to the first reply:
// every Range request carries If-Range with its validator (a strong ETag,
// else Last-Modified), and every 206's Content-Range total must be the
// size first seen. From a server that sends no validator at all, that
// total is all there is: a file replaced by another of the same size
// between two requests cannot be told from the first (HTTP offers nothing
// else short of reading the file whole, which is what --checksum does).

// Overlay is fsys with the file name served from data (the bytes read
// through the checksum) instead.
func Overlay(fsys fs.FS, name string, data []byte) fs.FS {
	return &overlayFS{fsys: fsys, name: name, data: data}
}

// OverlayFile is fsys with the file name served from the local file at
// local (where it was spooled while it was hashed) instead.
func OverlayFile(fsys fs.FS, name, local string) fs.FS {
	return &overlayFS{fsys: fsys, name: name, local: local}
}

// ErrNotSpooled is what a spooled file's file system says of every other
// name: a VMDK that came through a stream, an archive or a compressed file
// is the one file spooled, and the files it names are not there.
var ErrNotSpooled = fmt.Errorf("%w: only the spooled file is there", fs.ErrNotExist)

// SpooledAlone is a file system holding only the file name, served from
// the local file at local (where it was spooled). The spool's directory
// is the scratch directory, never the source's: names a VMDK from the
// network gives (extents, a parent) must not resolve to local files
// there, so every other name does not exist (ErrNotSpooled).
func SpooledAlone(name, local string) fs.FS { return OverlayFile(noFiles{}, name, local) }

// noFiles is an empty file system.
type noFiles struct{}

func (noFiles) Open(name string) (fs.File, error) {
	return nil, &fs.PathError{Op: "open", Path: name, Err: ErrNotSpooled}
}

type overlayFS struct {
	fsys  fs.FS
	name  string
	data  []byte
	local string // "": data
}

func (o *overlayFS) Open(name string) (fs.File, error) {
	if name != o.name {
		return o.fsys.Open(name)
	}
	if o.local == "" {
		return &memFile{name: name, Reader: bytes.NewReader(o.data), size: int64(len(o.data))}, nil
	}
	f, err := os.Open(o.local)
	if err != nil {
		return nil, fmt.Errorf("%s, spooled to %s: %w", name, o.local, err)
	}
	return f, nil
}

// memFile is a file read from memory: fs.File and io.ReaderAt.
type memFile struct {
	name string
	*bytes.Reader
	size int64
}

func (f *memFile) Stat() (fs.FileInfo, error) { return memFileInfo{f}, nil }
func (f *memFile) Close() error               { return nil }

type memFileInfo struct{ f *memFile }

func (i memFileInfo) Name() string       { return path.Base(i.f.name) }
func (i memFileInfo) Size() int64        { return i.f.size }
func (i memFileInfo) Mode() fs.FileMode  { return 0o444 }
func (i memFileInfo) ModTime() time.Time { return time.Time{} }
func (i memFileInfo) IsDir() bool        { return false }
func (i memFileInfo) Sys() any           { return nil }
