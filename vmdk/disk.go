package vmdk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
)

// DefaultMaxChainDepth bounds backing chains; deeper chains are refused.
const DefaultMaxChainDepth = 64

// Options controls how Open resolves and trusts the files a disk names.
// Like every options struct in this package it is passed by value, and
// its zero value is the default.
type Options struct {
	// Root, when set, is the directory every extent and parent path must
	// stay inside (e.g. "/images" so a child may name "../base/disk.vmdk").
	// When empty, each descriptor may only name files in its own directory.
	Root string
	// AllowUnsafePaths accepts absolute and escaping paths: only for images
	// the caller trusts. In OpenFS it never leads out of the fs.FS.
	AllowUnsafePaths bool
	// MaxChainDepth bounds the backing chain (DefaultMaxChainDepth if 0).
	MaxChainDepth int
	// ReadWrite opens the disk's own files for writing (its backing chain
	// stays read-only): the Disk then implements io.WriterAt and Flush.
	ReadWrite bool
}

// Disk is an opened VMDK: its descriptor, extents and backing disk. It
// implements io.ReaderAt over the guest-visible content and is safe for
// concurrent reads.
type Disk struct {
	path       string
	descriptor *Descriptor
	header     *SparseHeader // first hosted sparse extent's header, if any
	// self is the sparse extent in the disk's own file (monolithicSparse,
	// streamOptimized): where its embedded descriptor lives, whichever
	// extent the descriptor's first line names.
	self    *sparseExtent
	kind    Kind
	extents []placedExtent
	size    int64
	parent  *Disk
	// chainErr, when set, is returned by any read that needs the parent.
	chainErr error
	sources  []*source // files this disk opened (closed by Close)

	writable   bool
	wmu        sync.Mutex // serialises writes and Flush
	cidChanged bool       // the CID was re-randomised since Open
}

// placedExtent is an extent at its place in the disk's address space.
type placedExtent struct {
	start, size int64 // bytes
	line        ExtentLine
	ext         extent
}

// Open opens the VMDK at path (a descriptor file, a monolithic sparse or
// stream image, or a bare sparse extent) together with its extents and its
// backing chain.
func Open(path string, opts Options) (*Disk, error) {
	o := opener{opts: opts, seen: map[fileID]bool{}}
	if o.opts.MaxChainDepth == 0 {
		o.opts.MaxChainDepth = DefaultMaxChainDepth
	}
	return o.open(path, 0)
}

// OpenReaderAt opens a self-contained image (monolithicSparse or
// streamOptimized: one file with its descriptor embedded) from r. Images
// that name other files (extents, parents) are refused with ErrUnsupported.
func OpenReaderAt(r io.ReaderAt, size int64, name string) (*Disk, error) {
	o := opener{opts: Options{MaxChainDepth: 1}, noFiles: true}
	d, err := o.openSource(&source{name: name, r: r, size: size}, 0, 0)
	if err != nil {
		return nil, err
	}
	o.shareTableCache()
	return d, nil
}

type opener struct {
	opts    Options
	rw      bool            // files opened now are for writing
	seen    map[fileID]bool // cycle detection across the chain
	noFiles bool            // OpenReaderAt: no other file may be opened
	from    fileSource      // where files come from; nil: the host
	// noParent leaves the top disk's parent unopened (its reads that need
	// the parent fail): for relinking an image whose chain cannot open.
	noParent bool
	opened   []*source
	// Files and sparse extents already opened, shared by every extent
	// line (and chain level) that names them again.
	shared   map[fileKey]*source
	byPath   map[pathKey]*source
	sparse   map[*source]*sparseExtent
	seSparse map[*source]*seSparseExtent
	// directories bounds the grain directories held (maxDirectoryBytes).
	directories directoryBudget
}

func (o *opener) open(path string, depth int) (*Disk, error) {
	mark := len(o.opened)
	o.rw = depth == 0 && o.opts.ReadWrite
	src, err := o.openFile(path)
	if err != nil {
		return nil, err
	}
	if st, ok := o.files().identity(src); ok {
		if o.seen[st] {
			o.closeAll()
			return nil, fmt.Errorf("%s: %w: backing chain loops back to this file", path, ErrChainBroken)
		}
		o.seen[st] = true
	}
	d, err := o.openSource(src, depth, mark)
	if err != nil {
		if depth == 0 {
			o.closeAll()
		}
		return nil, err
	}
	if depth == 0 {
		o.shareTableCache() // the whole chain is open
	}
	return d, nil
}

// openSource builds the disk whose first file is src; o.opened[mark:] are
// the files opened for it.
func (o *opener) openSource(src *source, depth, mark int) (*Disk, error) {
	d := &Disk{path: src.name}
	kind, err := Probe(src.r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.name, err)
	}
	d.kind = kind
	var self extent // the sparse extent in src itself, if any
	switch kind {
	case KindDescriptor:
		if src.size > maxDescriptorBytes {
			return nil, fmt.Errorf("%s: %w: descriptor file of %d bytes is too big", src.name, ErrCorrupt, src.size)
		}
		text := make([]byte, src.size)
		if err := src.readFull(text, 0, "descriptor"); err != nil {
			return nil, err
		}
		if d.descriptor, err = ParseDescriptor(text); err != nil {
			return nil, fmt.Errorf("%s: %w", src.name, err)
		}
	case KindSparse:
		se, err := o.sparseOf(src, kind)
		if err != nil {
			return nil, err
		}
		self, d.self, d.header = se, se, se.header
		if d.descriptor, err = readEmbeddedDescriptor(src, se.header); err != nil {
			return nil, err
		}
	case KindCOWD:
		se, err := o.sparseOf(src, kind)
		if err != nil {
			return nil, err
		}
		self = se
		d.descriptor = bareDescriptor("vmfsSparse", se.capacity/SectorSize)
	case KindSESparse:
		// A seSparse file holds only what a snapshot changed: read alone,
		// everything else would read as zeros.
		return nil, fmt.Errorf("%s: %w: a seSparse extent is a snapshot delta: open its descriptor (<vm>-00000N.vmdk), which names the parent", src.name, ErrUnsupported)
	}
	if err := o.placeExtents(d, src, self); err != nil {
		return nil, err
	}
	d.sources = append(d.sources, o.opened[mark:]...)
	if src.closer == nil { // OpenReaderAt's caller's, not in o.opened
		d.sources = append(d.sources, src)
	}
	d.writable = o.rw
	o.rw = false // the backing chain is only read
	if err := o.openParent(d, depth); err != nil {
		return nil, err
	}
	return d, nil
}

// readEmbeddedDescriptor returns the descriptor inside a sparse extent, or
// a synthesized one for a bare extent (descriptorSize 0, as in the pieces of
// a twoGbMaxExtentSparse disk).
func readEmbeddedDescriptor(src *source, h *SparseHeader) (*Descriptor, error) {
	if h.DescriptorSize == 0 || h.DescriptorOffset == 0 {
		createType := "monolithicSparse"
		if h.Compressed() {
			createType = "streamOptimized"
		}
		return bareDescriptor(createType, int64(h.Capacity)), nil
	}
	text := make([]byte, h.DescriptorSize*SectorSize)
	if err := src.readFull(text, int64(h.DescriptorOffset)*SectorSize, "embedded descriptor"); err != nil {
		return nil, err
	}
	d, err := ParseDescriptor(text)
	if err != nil {
		return nil, fmt.Errorf("%s: embedded descriptor: %w", src.name, err)
	}
	return d, nil
}

func bareDescriptor(createType string, sectors int64) *Descriptor {
	return &Descriptor{
		Version: 1, ParentCID: NoParentCID, CreateType: createType,
		Extents: []ExtentLine{{Access: AccessRW, Sectors: sectors, Type: ExtentSparse}},
	}
}

// placeExtents opens every extent line at its place. Every line counts
// toward the size, whatever its access or type (QEMU drops RDONLY, NOACCESS
// and ZERO lines and then misplaces the extents after them).
func (o *opener) placeExtents(d *Disk, src *source, self extent) error {
	dir := o.files().dir(src.name)
	lines := d.descriptor.Extents
	if len(lines) == 0 {
		return fmt.Errorf("%s: %w: descriptor lists no extents", src.name, ErrCorrupt)
	}
	if err := o.checkFileCount(src, lines); err != nil {
		return err
	}
	var pos int64
	for i, line := range lines {
		size := line.Sectors * SectorSize
		var ext extent
		var err error
		switch {
		case line.Access == AccessNoAccess:
			ext = noAccessExtent{}
		case line.Type == ExtentZero:
			ext = zeroExtent{}
		case self != nil && (len(lines) == 1 || line.File == o.files().base(src.name)):
			// The embedded descriptor names the file itself (perhaps by a
			// name it had before being renamed).
			ext = self
		case self != nil && d.kind == KindCOWD:
			return fmt.Errorf("%s: %w: COWD extent with more than one extent line", src.name, ErrCorrupt)
		default:
			ext, err = o.openExtent(dir, line)
		}
		if se, ok := ext.(*sparseExtent); ok && err == nil {
			_, err = fitSparseLine(se.src.name, size, se.capacity)
			if d.header == nil {
				d.header = se.header
			}
		}
		if se, ok := ext.(*seSparseExtent); ok && err == nil {
			_, err = fitSparseLine(se.src.name, size, se.capacity)
		}
		if err != nil {
			return fmt.Errorf("%s: extent %d (%q): %w", src.name, i, line.File, err)
		}
		d.extents = append(d.extents, placedExtent{start: pos, size: size, line: line, ext: ext})
		pos += size
	}
	d.size = pos
	return nil
}

func (o *opener) openExtent(dir string, line ExtentLine) (extent, error) {
	path, err := o.resolve(dir, line.File)
	if err != nil {
		return nil, err
	}
	src, err := o.openFile(path)
	if err != nil {
		return nil, err
	}
	if line.Type.flatLike() {
		base := line.Offset * SectorSize
		if need := base + line.Sectors*SectorSize; src.size < need {
			return nil, fmt.Errorf("%s: %w: flat extent file is %d bytes, expecting at least %d", path, ErrCorrupt, src.size, need)
		}
		return &flatExtent{src: src, base: base}, nil
	}
	if se, ok := o.sparse[src]; ok {
		return se, nil // parsed for an earlier line naming the same file
	}
	if se, ok := o.seSparse[src]; ok {
		return se, nil
	}
	kind, err := Probe(src.r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if kind == KindSESparse {
		return o.seSparseOf(src)
	}
	return o.sparseOf(src, kind)
}

// resolveHost turns a path from a descriptor into a host file path,
// refusing absolute paths and paths that leave the allowed directory
// (including through symbolic links).
func resolveHost(dir, name string, opts Options) (string, error) {
	if opts.AllowUnsafePaths {
		if filepath.IsAbs(name) {
			return name, nil
		}
		return filepath.Join(dir, name), nil
	}
	if filepath.IsAbs(name) || strings.HasPrefix(name, `\`) || (len(name) > 1 && name[1] == ':') {
		return "", fmt.Errorf("%w: %q is absolute", ErrInsecurePath, name)
	}
	root := opts.Root
	if root == "" {
		root = dir
	}
	path := filepath.Join(dir, name)
	absRoot, err1 := filepath.Abs(root)
	absPath, err2 := filepath.Abs(path)
	if err1 != nil || err2 != nil || !within(absRoot, absPath) {
		return "", fmt.Errorf("%w: %q leaves %s", ErrInsecurePath, name, root)
	}
	// The lexical check passed; make sure no symbolic link leads out.
	realRoot, err1 := filepath.EvalSymlinks(absRoot)
	realPath, err2 := filepath.EvalSymlinks(absPath)
	if err1 == nil && err2 == nil && !within(realRoot, realPath) {
		return "", fmt.Errorf("%w: %q leads out of %s through a symbolic link", ErrInsecurePath, name, root)
	}
	return path, nil
}

func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// openParent opens the backing disk named by parentFileNameHint. A parent
// whose CID differs from the child's parentCID is kept, but reads that fall
// through to it fail with ErrChainBroken.
func (o *opener) openParent(d *Disk, depth int) error {
	desc := d.descriptor
	if desc.ParentFileNameHint == "" {
		if desc.ParentCID != NoParentCID {
			d.chainErr = fmt.Errorf("%w: %s has parentCID %08x but no parentFileNameHint", ErrChainBroken, d.path, desc.ParentCID)
		}
		return nil
	}
	if o.noFiles {
		return fmt.Errorf("%s: %w: it names a parent, which needs Open, not OpenReaderAt", d.path, ErrUnsupported)
	}
	if o.noParent {
		d.chainErr = fmt.Errorf("%w: %s: its parent %q was not opened", ErrChainBroken, d.path, desc.ParentFileNameHint)
		return nil
	}
	if depth+1 >= o.opts.MaxChainDepth {
		return fmt.Errorf("%s: %w: backing chain deeper than %d", d.path, ErrChainBroken, o.opts.MaxChainDepth)
	}
	path, err := o.resolve(o.files().dir(d.path), desc.ParentFileNameHint)
	if err != nil {
		return fmt.Errorf("%s: parent: %w", d.path, err)
	}
	parent, err := o.open(path, depth+1)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %w: parent %q: %v", d.path, ErrChainBroken, desc.ParentFileNameHint, err)
		}
		return fmt.Errorf("%s: parent: %w", d.path, err)
	}
	if parent.kind != KindDescriptor && parent.kind != KindSparse {
		return fmt.Errorf("%s: %w: parent %s is not a VMDK with a descriptor", d.path, ErrChainBroken, path)
	}
	d.parent = parent
	if parent.descriptor.CID != desc.ParentCID {
		d.chainErr = fmt.Errorf("%w: %s has parentCID %08x but its parent %s has CID %08x", ErrChainBroken, d.path, desc.ParentCID, path, parent.descriptor.CID)
	}
	return nil
}

// Close closes every file of the disk and its backing chain. On a writable
// disk it first writes the grain tables still held in memory (without
// syncing: Flush is what makes writes durable).
func (d *Disk) Close() error {
	first := d.flush(false)
	for _, s := range d.sources {
		if s.closer != nil {
			if err := s.closer.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	if d.parent != nil {
		if err := d.parent.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Files lists the paths (for OpenFS, the names in its fs.FS) of every
// file the disk and its backing chain read, descriptor first.
func (d *Disk) Files() []string {
	var out []string
	for ; d != nil; d = d.parent {
		for _, s := range d.sources {
			out = append(out, s.name)
		}
	}
	return out
}

// Size is the virtual disk size in bytes.
func (d *Disk) Size() int64 { return d.size }

// Path is the file the disk was opened from.
func (d *Disk) Path() string { return d.path }

// Descriptor is the disk's parsed descriptor (synthesized for bare extents).
func (d *Disk) Descriptor() *Descriptor { return d.descriptor }

// Header is the first hosted sparse extent's header (the footer copy for
// stream images), or nil.
func (d *Disk) Header() *SparseHeader { return d.header }

// CID is the content ID.
func (d *Disk) CID() uint32 { return d.descriptor.CID }

// ParentCID is the CID the parent had when this disk was created from it.
func (d *Disk) ParentCID() uint32 { return d.descriptor.ParentCID }

// CreateType is the descriptor's createType, kept as written.
func (d *Disk) CreateType() string { return d.descriptor.CreateType }

// ParentFileNameHint is the descriptor's path to the parent, as written.
func (d *Disk) ParentFileNameHint() string { return d.descriptor.ParentFileNameHint }

// Parent is the backing disk, or nil.
func (d *Disk) Parent() *Disk { return d.parent }

// ChainError is non-nil when reads that need the parent will fail.
func (d *Disk) ChainError() error { return d.chainErr }

// ExtentInfo describes one extent for callers (info, map).
type ExtentInfo struct {
	Access     Access
	Type       ExtentType
	Start      int64  // byte offset in the disk
	Size       int64  // bytes
	File       string // path of the extent file; "" for ZERO/NOACCESS
	Offset     int64  // byte offset of the content in File (flat)
	GrainSize  int64  // bytes; 0 for flat and zero extents
	Compressed bool
	Format     string // "flat", "zero", "noaccess", "KDMV", "COWD" or "seSparse"
}

// Extents describes the disk's extents in virtual order.
func (d *Disk) Extents() []ExtentInfo {
	out := make([]ExtentInfo, 0, len(d.extents))
	for _, pe := range d.extents {
		info := ExtentInfo{Access: pe.line.Access, Type: pe.line.Type, Start: pe.start, Size: pe.size}
		switch e := pe.ext.(type) {
		case *flatExtent:
			info.File, info.Offset, info.Format = e.src.name, e.base, "flat"
		case *sparseExtent:
			info.File, info.GrainSize, info.Compressed = e.src.name, e.grainBytes, e.compressed
			info.Format = "COWD"
			if e.header != nil {
				info.Format = "KDMV"
			}
		case *seSparseExtent:
			info.File, info.GrainSize, info.Format = e.src.name, seGrainBytes, "seSparse"
		case zeroExtent:
			info.Format = "zero"
		case noAccessExtent:
			info.Format = "noaccess"
		}
		out = append(out, info)
	}
	return out
}

// AllocatedBytes is the space the disk's own files occupy on the host
// (blocks actually allocated, so holes in sparse files do not count); the
// parent's files are not included.
func (d *Disk) AllocatedBytes() int64 {
	var n int64
	seen := map[*source]bool{}
	for _, s := range d.sources {
		if seen[s] {
			continue
		}
		seen[s] = true
		if s.f != nil {
			if fi, err := s.f.Stat(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
					continue
				}
			}
		}
		n += s.size
	}
	return n
}

// extentAt returns the index of the extent holding byte off (< d.size).
func (d *Disk) extentAt(off int64) int {
	return sort.Search(len(d.extents), func(i int) bool {
		return d.extents[i].start+d.extents[i].size > off
	})
}

// ReadAt reads guest-visible content. Unallocated ranges come from the
// backing chain, or read as zeros at its end.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: %w: negative offset %d", d.path, ErrOutOfRange, off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), d.size-off))
	if err := d.read(p[:n], off); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *Disk) read(p []byte, off int64) error {
	for len(p) > 0 {
		pe := &d.extents[d.extentAt(off)]
		rel := off - pe.start
		r, err := pe.ext.lookup(rel, min(int64(len(p)), pe.size-rel))
		if err != nil {
			return err
		}
		chunk := p[:r.n]
		switch r.kind {
		case runData, runCompressed:
			err = pe.ext.read(chunk, rel, r)
		case runZero:
			clear(chunk)
		case runNoAccess:
			err = fmt.Errorf("%s: %w: byte %d is in NOACCESS extent %q", d.path, ErrNoAccess, off, pe.line.File)
		case runUnallocated:
			err = d.readParent(chunk, off)
		}
		if err != nil {
			return err
		}
		p, off = p[r.n:], off+r.n
	}
	return nil
}

// readParent reads an unallocated range from the backing chain: zeros at
// the chain's end or past the end of a smaller parent.
func (d *Disk) readParent(p []byte, off int64) error {
	if d.chainErr != nil {
		return fmt.Errorf("read at byte %d needs the parent: %w", off, d.chainErr)
	}
	if d.parent == nil {
		clear(p)
		return nil
	}
	n := int(max(0, min(int64(len(p)), d.parent.size-off)))
	clear(p[n:])
	if n == 0 {
		return nil
	}
	return d.parent.read(p[:n], off)
}
