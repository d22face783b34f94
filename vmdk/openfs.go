package vmdk

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// OpenFS opens the VMDK named name in fsys (a descriptor, a monolithic
// sparse or stream image) with its extents and backing chain, every file
// read through fsys. Files fsys opens must implement io.ReaderAt; their
// size is their Stat size. Names are slash-separated paths (io/fs rules);
// extent and parent names resolve against the naming descriptor's
// directory and must stay inside it, or inside opts.Root (a directory of
// fsys) when set. opts.ReadWrite is refused: such disks are read-only.
//
// The opener is Open's: the same parsing, limits, file sharing and chain
// rules. What differs follows from fs.FS having no inodes and no holes:
// a file is known by its cleaned name (two names reaching one file are
// two files, and a chain loops when a name comes back), flat extents are
// read whole rather than split at the holes of their file, and
// AllocatedBytes counts file sizes. Options.AllowUnsafePaths lets names
// leave the descriptor's directory (and Root) but never fsys: absolute
// names, names above its root and names with a backslash are refused all
// the same. Symbolic links are fsys's business: os.DirFS follows them out
// of its directory, an os.Root's FS does not.
//
// Errors fsys returns are wrapped, not replaced, so errors.Is and
// errors.As see them (a parent fsys says does not exist is also
// ErrChainBroken, as with Open). The files' ReadAt must allow concurrent
// calls, as io.ReaderAt says, for the Disk to be safe for concurrent reads.
func OpenFS(fsys fs.FS, name string, opts Options) (*Disk, error) {
	if fsys == nil {
		return nil, fmt.Errorf("%s: %w: OpenFS needs a file system", name, ErrInvalidOptions)
	}
	if opts.ReadWrite {
		return nil, fmt.Errorf("%s: %w: OpenFS opens disks read-only; write through Open on a host file", name, ErrInvalidOptions)
	}
	if !fs.ValidPath(name) {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid})
	}
	if opts.Root != "" {
		root := path.Clean(opts.Root)
		if !fs.ValidPath(root) {
			return nil, fmt.Errorf("%s: %w: Root %q is not a directory name of the file system (io/fs rules: slash-separated, relative, no \"..\")", name, ErrInvalidOptions, opts.Root)
		}
		opts.Root = root
	}
	o := opener{opts: opts, seen: map[fileID]bool{}, from: fsFiles{fsys}}
	if o.opts.MaxChainDepth == 0 {
		o.opts.MaxChainDepth = DefaultMaxChainDepth
	}
	return o.open(name, 0)
}

// fsFiles is the fileSource of OpenFS.
type fsFiles struct{ fsys fs.FS }

func (fsFiles) dir(name string) string  { return path.Dir(name) }
func (fsFiles) base(name string) string { return path.Base(name) }

// identity is the name itself: resolve cleans every name it returns and
// OpenFS takes only valid (clean) ones.
func (fsFiles) identity(s *source) (fileID, bool) { return fileID{name: s.name}, true }

func (x fsFiles) open(name string, rw bool) (*source, error) {
	if rw {
		// OpenFS refuses ReadWrite, and nothing else opens for writing.
		return nil, fmt.Errorf("%s: internal error: %w: a file system file opened for writing", name, ErrReadOnly)
	}
	f, err := x.fsys.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	// A directory, FIFO or device has no size to bound the metadata by.
	if m := fi.Mode(); !m.IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w: not a regular file (%s)", name, ErrUnsupported, fileType(m))
	}
	r, ok := f.(io.ReaderAt)
	if !ok {
		f.Close()
		return nil, fmt.Errorf("%s: %w: the file system's files cannot be read at an offset (no ReadAt), which a VMDK needs; the file system must return io.ReaderAt files", name, ErrUnsupported)
	}
	if fi.Size() < 0 {
		f.Close()
		return nil, fmt.Errorf("%s: %w: the file system reports a size of %d bytes", name, ErrCorrupt, fi.Size())
	}
	return &source{name: name, r: r, size: fi.Size(), closer: f}, nil
}

// resolve applies OpenFS's confinement: the joined, cleaned name must be a
// valid fs.FS name and, unless AllowUnsafePaths, inside opts.Root or dir.
func (fsFiles) resolve(dir, name string, opts Options) (string, error) {
	// A backslash is a separator to VMware on Windows but a plain
	// character to io/fs: "..\x" would not be seen as leaving.
	if strings.Contains(name, `\`) {
		return "", fmt.Errorf("%w: %q has a backslash, which file system names cannot hold", ErrInsecurePath, name)
	}
	if strings.HasPrefix(name, "/") || (len(name) > 1 && name[1] == ':') {
		return "", fmt.Errorf("%w: %q is absolute", ErrInsecurePath, name)
	}
	p := path.Join(dir, name)
	if !fs.ValidPath(p) {
		return "", fmt.Errorf("%w: %q leaves the file system's root", ErrInsecurePath, name)
	}
	if opts.AllowUnsafePaths {
		return p, nil
	}
	root := opts.Root
	if root == "" {
		root = dir
	}
	if !inFSDir(root, p) {
		return "", fmt.Errorf("%w: %q leaves %s", ErrInsecurePath, name, root)
	}
	return p, nil
}

// inFSDir reports whether the clean name p is dir or below it.
func inFSDir(dir, p string) bool {
	return dir == "." || p == dir || strings.HasPrefix(p, dir+"/")
}
