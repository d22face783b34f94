package vmdk

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// maxOpenFiles bounds the files one Open may hold open: the descriptors,
// extents and parents of the whole chain. The largest disk Create makes,
// a 62 TiB twoGbMaxExtentFlat (VMware's largest virtual disk), has 31744
// extent files; what is left leaves room for a chain above it, and the
// whole stays far below the file descriptors a Job may open (Go raises the
// soft limit to the hard one, 1048576 in containerd's pods). A descriptor
// naming more files is refused before they are opened, rather than
// failing half-way with EMFILE.
const maxOpenFiles = 32768

// OpenDataFile opens a file image data is read from (or written to, with
// flag os.O_RDWR): a regular file or a block device. Anything else is
// refused with ErrUnsupported without blocking: a FIFO would block open(2)
// until a writer appears (and then read one stream, not a disk), a
// character device reads forever. The check is made with fstat on the
// opened descriptor, so there is no window between check and open.
func OpenDataFile(path string, flag int) (*os.File, error) {
	f, err := openNonblocking(path, flag, 0)
	if err != nil {
		return nil, err
	}
	if err := checkDataFile(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openNonblocking opens path with O_NONBLOCK, so that open(2) returns at
// once whatever the path is (a FIFO without a writer blocks it otherwise),
// then clears O_NONBLOCK: regular files, block devices and directories are
// used blocking. Every host file the package opens goes through it (see
// osFS).
func openNonblocking(path string, flag int, perm fs.FileMode) (*os.File, error) {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(path, flag|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, uint32(perm.Perm()))
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := syscall.SetNonblock(fd, false); err != nil {
		syscall.Close(fd)
		return nil, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// checkDataFile refuses an opened file that is neither a regular file nor
// a block device.
func checkDataFile(f interface {
	Name() string
	Stat() (fs.FileInfo, error)
}) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if m := fi.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		return fmt.Errorf("%s: %w: not a regular file or block device (%s)", f.Name(), ErrUnsupported, fileType(m))
	}
	return nil
}

func fileType(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	}
	return m.Type().String()
}

// fileID names a file whatever path led to it: its device and inode on
// the host; in an fs.FS, which has no inodes, its cleaned name.
type fileID struct {
	dev, ino uint64
	name     string
}

// fileKey names one opened file: a file opened for writing and the same
// file opened read-only (a child and its chain) are not shared.
type fileKey struct {
	id fileID
	rw bool
}

// fileSource is where an opener's files come from: host files (Open) or an
// fs.FS (OpenFS). It is the one place the two differ; descriptor parsing,
// extent placement, chains, limits and sharing are the same code for both.
type fileSource interface {
	// open opens the file at name (for writing when rw) as a source whose
	// closer closes it.
	open(name string, rw bool) (*source, error)
	// identity is what makes two names one file, for sharing and cycle
	// detection; ok is false when it cannot be known.
	identity(s *source) (id fileID, ok bool)
	// resolve turns a name a descriptor in directory dir gives into a name
	// to open, or refuses it with ErrInsecurePath.
	resolve(dir, name string, opts Options) (string, error)
	// dir and base split names the way open takes them.
	dir(name string) string
	base(name string) string
}

// hostFiles is the host's file system, through host.
type hostFiles struct{}

func (hostFiles) open(name string, rw bool) (*source, error) {
	flag := os.O_RDONLY
	if rw {
		flag = os.O_RDWR
	}
	f, err := host.OpenFile(name, flag, 0)
	if err != nil {
		return nil, err
	}
	if err := checkDataFile(f); err != nil {
		f.Close()
		return nil, err
	}
	size, err := fileSize(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &source{name: name, r: f, size: size, f: f, closer: f}, nil
}

func (hostFiles) identity(s *source) (fileID, bool) {
	if s.f == nil {
		return fileID{}, false
	}
	return statID(s.f)
}

func (hostFiles) resolve(dir, name string, opts Options) (string, error) {
	return resolveHost(dir, name, opts)
}

func (hostFiles) dir(name string) string  { return filepath.Dir(name) }
func (hostFiles) base(name string) string { return filepath.Base(name) }

// files is the opener's fileSource: the host unless OpenFS set one.
func (o *opener) files() fileSource {
	if o.from == nil {
		return hostFiles{}
	}
	return o.from
}

// resolve turns a path from a descriptor in directory dir into a name to
// open under o's path rules.
func (o *opener) resolve(dir, name string) (string, error) {
	return o.files().resolve(dir, name, o.opts)
}

// openFile opens path, or returns the source already opened for the same
// file (by fileID, whatever name led to it): every extent line naming a
// file shares one source, and through it one parsed sparse extent.
func (o *opener) openFile(path string) (*source, error) {
	if o.noFiles {
		return nil, fmt.Errorf("%w: %s names another file, which needs Open, not OpenReaderAt", ErrUnsupported, path)
	}
	if o.shared == nil { // every opener shares, however it was made
		o.shared, o.byPath = map[fileKey]*source{}, map[pathKey]*source{}
	}
	if s, ok := o.byPath[pathKey{path, o.rw}]; ok {
		return s, nil
	}
	files := o.files()
	s, err := files.open(path, o.rw)
	if errors.Is(err, syscall.EMFILE) {
		// The process's limit, not a passing shortage: the same disk
		// fails the same way on every attempt.
		return nil, fmt.Errorf("%s: %w: the disk needs more files open than the process may have (%d are open for it): %v", path, ErrUnsupported, len(o.opened), err)
	}
	if err != nil {
		return nil, err
	}
	id, ok := files.identity(s)
	key := fileKey{id, o.rw}
	if shared, found := o.shared[key]; ok && found {
		s.closer.Close()
		o.byPath[pathKey{path, o.rw}] = shared
		return shared, nil
	}
	if len(o.opened) >= maxOpenFiles {
		s.closer.Close()
		return nil, fmt.Errorf("%s: %w: the disk and its chain name more than %d files", path, ErrUnsupported, maxOpenFiles)
	}
	o.opened = append(o.opened, s)
	if ok {
		o.shared[key] = s
	}
	o.byPath[pathKey{path, o.rw}] = s
	return s, nil
}

type pathKey struct {
	path string
	rw   bool
}

// fileSize is the size of a regular file or block device (which stat
// reports as 0).
func fileSize(f hostFile) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode()&os.ModeDevice == 0 {
		return fi.Size(), nil
	}
	return f.Seek(0, io.SeekEnd)
}

// sparseOf returns the sparse extent in src (a KDMV or COWD file), parsing
// it once however many extent lines name the file: each parse holds the
// file's grain directory, so a copy per line would multiply it.
func (o *opener) sparseOf(src *source, kind Kind) (*sparseExtent, error) {
	if se, ok := o.sparse[src]; ok {
		return se, nil
	}
	var se *sparseExtent
	var err error
	switch kind {
	case KindSparse:
		se, err = openKDMV(src, &o.directories)
	case KindCOWD:
		se, err = openCOWD(src, &o.directories)
	default:
		return nil, fmt.Errorf("%s: %w: sparse extent has neither a KDMV nor a COWD header", src.name, ErrCorrupt)
	}
	if err != nil {
		return nil, err
	}
	if o.sparse == nil {
		o.sparse = map[*source]*sparseExtent{}
	}
	o.sparse[src] = se
	return se, nil
}

// seSparseOf returns the seSparse extent in src, parsed once however many
// extent lines (or chain levels) name the file.
func (o *opener) seSparseOf(src *source) (*seSparseExtent, error) {
	if se, ok := o.seSparse[src]; ok {
		return se, nil
	}
	se, err := openSESparse(src, &o.directories)
	if err != nil {
		return nil, err
	}
	if o.seSparse == nil {
		o.seSparse = map[*source]*seSparseExtent{}
	}
	o.seSparse[src] = se
	return se, nil
}

// maxDirectoryBytes bounds the grain directories (and redundant copies)
// one Open holds in memory, whatever the number of files: as much as a
// single extent may have (QEMU's limit of 32 Mi entries, a 512 TiB extent
// at 64 KiB grains), which no real disk comes near (a 62 TiB disk has 8
// MiB), but not that once per file.
const maxDirectoryBytes = maxGDEntries * 4

// directoryBudget is what is left of maxDirectoryBytes in one Open.
type directoryBudget struct{ used int64 }

// take reserves n bytes for the directory what of file name, before it is
// allocated.
func (b *directoryBudget) take(name, what string, n int64) error {
	if b == nil {
		return nil
	}
	if b.used+n > maxDirectoryBytes {
		return fmt.Errorf("%s: %w: its %s (%d MiB) would take the grain directories of the disk and its chain past %d MiB", name, ErrUnsupported, what, n>>20, maxDirectoryBytes>>20)
	}
	b.used += n
	return nil
}

// shareTableCache divides gtCacheBytes among the sparse extents opened:
// each then caches at most its share of grain tables (at least one, all a
// sequential read needs), instead of gtCacheTables each.
func (o *opener) shareTableCache() {
	if len(o.sparse)+len(o.seSparse) == 0 {
		return
	}
	per := gtCacheBytes / int64(len(o.sparse)+len(o.seSparse))
	for _, se := range o.sparse {
		se.cacheTables = int(min(gtCacheTables, max(1, per/(se.gtEntries*4))))
	}
	for _, se := range o.seSparse {
		se.cacheTables = int(min(seGTCache, max(1, per/(seGTEntries*8))))
	}
}

func (o *opener) closeAll() {
	for _, s := range o.opened {
		s.closer.Close()
	}
}

func statID(f hostFile) (fileID, bool) {
	fi, err := f.Stat()
	if err != nil {
		return fileID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, true
}

// checkFileCount refuses, before opening any, extent lines that name more
// files than maxOpenFiles allows with those already open. Names are
// counted, not files: a hostile descriptor naming one file many ways is
// refused too.
func (o *opener) checkFileCount(src *source, lines []ExtentLine) error {
	if o.noFiles {
		return nil // OpenReaderAt refuses the first other file itself
	}
	names := map[string]bool{}
	for _, l := range lines {
		if l.Access != AccessNoAccess && l.Type != ExtentZero && l.File != o.files().base(src.name) {
			names[l.File] = true
		}
	}
	if n := len(o.opened) + len(names); n > maxOpenFiles {
		return fmt.Errorf("%s: %w: its extent lines name %d files; with its chain that is more than the %d files a disk may open", src.name, ErrUnsupported, len(names), maxOpenFiles)
	}
	return nil
}
