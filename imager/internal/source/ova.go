package source

import (
	"archive/tar"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
)

// OVA reads an OVA (a tar: the OVF descriptor first, then the files it
// names, DSP0243 5.3) in one pass, so its disks stream out of a pipe or
// an HTTP reply: its disks in member order, a chunked file's members
// joined, every member imported checked against the manifest when the
// OVA has one, before or after the disks.
type OVA struct {
	tr    *tar.Reader
	Disks []*OVADisk

	envelopeName string
	envelope     []byte
	byHref       map[string]*OVADisk
	// manifest is nil until the .mf member has been read; early are the
	// members met before it (their digests, nil for those not read),
	// checked when it comes. At most maxListed are kept: a manifest after
	// more than that is refused (earlyFull), since it cannot list them.
	// absent are the files the manifest lists that the archive has not
	// held yet: once it ends, each is missing.
	manifest  map[string]manifestEntry
	early     map[string]map[string][]byte
	earlyFull bool
	absent    map[string]bool
	// pending is a header the reader of a chunked file read past its last
	// chunk: the next member, not its own.
	pending *tar.Header
	atEOF   bool
	cur     *diskReader
	read    map[*OVADisk]bool // disks whose every member has been read
	skipped map[*OVADisk]bool // disks passed over: their members are skipped

	finished  bool
	finishErr error
}

// OpenOVA reads an OVA's OVF descriptor, which must be its first file, as
// the OVF specification requires, so the disks can be streamed without
// reading the archive twice. Reads stop once ctx is done.
func OpenOVA(ctx context.Context, r io.Reader) (*OVA, error) {
	o := &OVA{tr: tar.NewReader(WithContext(ctx, r)), byHref: map[string]*OVADisk{},
		early: map[string]map[string][]byte{}, read: map[*OVADisk]bool{}, skipped: map[*OVADisk]bool{}}
	for {
		hdr, err := o.tr.Next()
		if err == io.EOF {
			return nil, damaged(errors.New("OVA: no .ovf descriptor in the archive"))
		}
		if err != nil {
			return nil, ovaErr(err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(hdr.Name)
		if !strings.EqualFold(path.Ext(name), ".ovf") {
			return nil, damaged(fmt.Errorf("OVA: the first file is %q; the OVF descriptor must come first", hdr.Name))
		}
		if hdr.Size > maxOVF {
			return nil, damaged(fmt.Errorf("OVA: OVF descriptor of %d bytes (at most %d)", hdr.Size, maxOVF))
		}
		b, err := io.ReadAll(io.LimitReader(o.tr, maxOVF))
		if err != nil {
			return nil, ovaErr(err)
		}
		if o.Disks, err = parseEnvelope(b); err != nil {
			return nil, err
		}
		for _, d := range o.Disks {
			o.byHref[d.Href] = d
		}
		o.envelopeName, o.envelope = name, b
		return o, nil
	}
}

// Pick finds the disk selected by sel: "" (the first disk), its 0-based
// index among the OVF's disks, its diskId or its file name.
func (o *OVA) Pick(sel string) (*OVADisk, error) { return pick(o.Disks, sel) }

// CheckAll says why some disk cannot be imported, if one cannot.
func (o *OVA) CheckAll() error {
	for _, d := range o.Disks {
		if d.problem != nil {
			return d.problem
		}
	}
	return nil
}

// Next skips to the next disk in member order (only: that disk, nil: any
// disk not read yet) and returns its reader, which ends at the end of
// the disk's file (all its chunks), and the file's size (-1: unknown).
// What was left unread of the disk before is read through first, so its
// manifest check is never skipped. Once every disk asked for has been
// read it returns io.EOF; a disk whose file the archive lacks is
// damaged.
func (o *OVA) Next(only *OVADisk) (*OVADisk, io.Reader, int64, error) {
	if err := o.closeCurrent(); err != nil {
		return nil, nil, 0, err
	}
	for {
		hdr, err := o.nextHeader()
		if err == io.EOF {
			return nil, nil, 0, o.missing(only)
		}
		if err != nil {
			return nil, nil, 0, err
		}
		d, err := o.member(hdr)
		if err != nil {
			return nil, nil, 0, err
		}
		if d == nil {
			continue
		}
		if only != nil && d != only {
			o.skipped[d] = true
			continue
		}
		if d.problem != nil {
			return nil, nil, 0, d.problem
		}
		r, err := o.openDisk(d, hdr)
		if err != nil {
			return nil, nil, 0, err
		}
		size := int64(-1)
		if d.ChunkSize == 0 {
			if d.Size > 0 && hdr.Size != d.Size {
				return nil, nil, 0, damaged(fmt.Errorf("OVA: member %q holds %d bytes, but its File's ovf:size is %d: the package is damaged or its descriptor wrong", d.Href, hdr.Size, d.Size))
			}
			size = hdr.Size
		} else if d.Size > 0 {
			size = d.Size
		}
		return d, r, size, nil
	}
}

// missing is Next's end of the archive: io.EOF once every disk asked for
// has been read.
func (o *OVA) missing(only *OVADisk) error {
	for _, d := range o.Disks {
		if (only == nil || d == only) && !o.read[d] {
			return damaged(fmt.Errorf("OVA: the archive has no member %q (disk %s)", d.Href, d.Description))
		}
	}
	return io.EOF
}

// Finish reads the rest of the archive: the disk being read, then every
// member after it, checking each against what came before (a manifest
// after the disks verifies them now; a chunk or a disk's file after it
// was read is refused). An import is verified only once Finish returned
// nil.
func (o *OVA) Finish() error {
	if !o.finished {
		o.finished = true
		o.finishErr = o.finish()
	}
	return o.finishErr
}

func (o *OVA) finish() error {
	if err := o.closeCurrent(); err != nil {
		return err
	}
	for {
		hdr, err := o.nextHeader()
		if err == io.EOF {
			return o.lacksListed()
		}
		if err != nil {
			return err
		}
		d, err := o.member(hdr)
		if err != nil {
			return err
		}
		if d != nil {
			o.skipped[d] = true
		}
	}
}

// lacksListed refuses an archive that ended without a file its manifest
// lists: it was cut at a member's boundary, which a tar reader cannot
// tell from its end.
func (o *OVA) lacksListed() error {
	if len(o.absent) == 0 {
		return nil
	}
	names := make([]string, 0, len(o.absent))
	for name := range o.absent {
		names = append(names, name)
	}
	slices.Sort(names)
	more := ""
	if len(names) > 3 {
		more = fmt.Sprintf(" and %d more", len(names)-3)
		names = names[:3]
	}
	return damaged(fmt.Errorf("OVA: the manifest lists %q%s, which the archive lacks: the archive is incomplete (cut short?); download it again", names, more))
}

func (o *OVA) nextHeader() (*tar.Header, error) {
	if h := o.pending; h != nil {
		o.pending = nil
		return h, nil
	}
	if o.atEOF {
		return nil, io.EOF
	}
	hdr, err := o.tr.Next()
	if err == io.EOF {
		o.atEOF = true
		return nil, io.EOF
	}
	if err != nil {
		return nil, ovaErr(err)
	}
	if hdr.Typeflag == tar.TypeReg {
		o.met(path.Clean(hdr.Name))
	}
	return hdr, nil
}

// maxListed is the most members a manifest of maxManifest bytes can list,
// each in its shortest line ("SHA1(x)=" and 40 hex digits).
const maxListed = maxManifest / len("SHA1(x)=0123456789012345678901234567890123456789\n")

// met notes a member the archive holds: one the manifest lists is no
// longer absent; before the manifest, it is remembered, so the manifest
// can be checked against it, up to what a manifest could list.
func (o *OVA) met(name string) {
	switch {
	case o.manifest != nil:
		delete(o.absent, name)
	case o.earlyFull:
	case len(o.early) >= maxListed:
		// The digests are dropped, so memory does not grow with an
		// archive of tiny chunks; a manifest that still comes is refused.
		o.early, o.earlyFull = nil, true
	default:
		if _, ok := o.early[name]; !ok {
			o.early[name] = nil
		}
	}
}

// member handles a member met between disks: the manifest is read and
// checked, a disk's file (or its first chunk) is returned for Next to
// take or skip, and what contradicts the members before it is refused:
// a second descriptor or manifest, a chunk out of order, a disk's file
// again after it was read.
func (o *OVA) member(hdr *tar.Header) (*OVADisk, error) {
	if hdr.Typeflag != tar.TypeReg {
		return nil, nil
	}
	name := path.Clean(hdr.Name)
	switch ext := strings.ToLower(path.Ext(name)); {
	case ext == ".ovf":
		return nil, damaged(fmt.Errorf("OVA: a second OVF descriptor %q", hdr.Name))
	case ext == ".mf":
		return nil, o.readManifest(hdr)
	}
	if d, k, ok := o.chunkOf(name); ok {
		switch {
		case o.read[d]:
			return nil, damaged(fmt.Errorf("OVA: %q after the last chunk of %q", name, d.Href))
		case o.skipped[d]:
			return nil, nil
		case k != 0:
			return nil, damaged(fmt.Errorf("OVA: %q comes before %q: a chunk is missing or out of order", name, chunkName(d.Href, 0)))
		}
		return d, nil
	}
	d := o.byHref[name]
	switch {
	case d == nil, o.skipped[d]:
		return nil, nil // a file the import does not need (an ISO, a .cert, another disk)
	case o.read[d]:
		return nil, damaged(fmt.Errorf("OVA: the archive holds %q twice", name))
	case d.ChunkSize > 0:
		return nil, damaged(fmt.Errorf("OVA: %q is a member although its File has ovf:chunkSize (its chunks are %q, ...)", name, chunkName(d.Href, 0)))
	}
	return d, nil
}

// chunkName is the member holding chunk k of the file href.
func chunkName(href string, k int) string { return fmt.Sprintf("%s.%09d", href, k) }

// chunkOf parses a chunk's member name: a chunked file's href, a dot and
// nine digits.
func chunkOf(name string) (href string, k int, ok bool) {
	i := len(name) - 10
	if i <= 0 || name[i] != '.' {
		return "", 0, false
	}
	for _, c := range name[i+1:] {
		if c < '0' || c > '9' {
			return "", 0, false
		}
	}
	k, err := strconv.Atoi(name[i+1:])
	return name[:i], k, err == nil
}

func (o *OVA) chunkOf(name string) (*OVADisk, int, bool) {
	href, k, ok := chunkOf(name)
	if !ok {
		return nil, 0, false
	}
	d := o.byHref[href]
	if d == nil || d.ChunkSize == 0 {
		return nil, 0, false
	}
	return d, k, true
}

func (o *OVA) readManifest(hdr *tar.Header) error {
	if o.manifest != nil {
		return damaged(fmt.Errorf("OVA: a second manifest %q", hdr.Name))
	}
	if o.earlyFull {
		return damaged(fmt.Errorf("OVA: manifest %q after more than %d members, more than a manifest of at most %d bytes can list: the package is damaged (a chunked file's ovf:chunkSize far too small?)", hdr.Name, maxListed, maxManifest))
	}
	if hdr.Size > maxManifest {
		return damaged(fmt.Errorf("OVA: manifest of %d bytes (at most %d)", hdr.Size, maxManifest))
	}
	b, err := io.ReadAll(io.LimitReader(o.tr, maxManifest))
	if err != nil {
		return ovaErr(err)
	}
	m, err := parseManifest(b)
	if err != nil {
		return err
	}
	h := newMemberHash(o.envelopeName, "SHA1", "SHA256", "SHA512")
	h.Write(o.envelope)
	if err := verifyAgainst(m, o.envelopeName, h.sums()); err != nil {
		return err
	}
	mfName := path.Clean(hdr.Name)
	for name, sums := range o.early {
		if sums == nil {
			continue // a member not read: not checked, but it came
		}
		if err := verifyAgainst(m, name, sums); err != nil {
			return err
		}
	}
	o.absent = map[string]bool{}
	for name := range m {
		if _, ok := o.early[name]; !ok && name != o.envelopeName && name != mfName {
			o.absent[name] = true
		}
	}
	o.manifest, o.early = m, nil
	return nil
}

// hashFor is how a member about to be read is hashed: with its manifest
// line's algorithm, or every algorithm while the manifest may still come.
// A member the manifest does not list is refused before it is read.
func (o *OVA) hashFor(name string) (*memberHash, error) {
	if o.manifest == nil {
		return newMemberHash(name, "SHA1", "SHA256", "SHA512"), nil
	}
	e, ok := o.manifest[name]
	if !ok {
		return nil, tag(ErrChecksum, fmt.Errorf("OVA: the manifest does not list %q, so it cannot be verified", name))
	}
	return newMemberHash(name, e.alg), nil
}

// memberRead checks a member read to its end: against the manifest now,
// or once it comes.
func (o *OVA) memberRead(h *memberHash) error {
	sums := h.sums()
	if o.manifest == nil {
		if o.early != nil {
			o.early[h.name] = sums
		}
		return nil
	}
	return verifyAgainst(o.manifest, h.name, sums)
}

func (o *OVA) openDisk(d *OVADisk, hdr *tar.Header) (io.Reader, error) {
	r := &diskReader{o: o, d: d}
	if err := r.startMember(hdr, 0); err != nil {
		return nil, err
	}
	o.cur = r
	return r, nil
}

// closeCurrent reads what is left of the disk being read, through its
// hash and its chunk checks.
func (o *OVA) closeCurrent() error {
	r := o.cur
	if r == nil {
		return nil
	}
	o.cur = nil
	_, err := io.Copy(io.Discard, r)
	return err
}

// diskReader reads a disk's file: its one member, or its chunks joined
// in order, each hashed and checked as it ends.
type diskReader struct {
	o     *OVA
	d     *OVADisk
	hash  *memberHash
	k     int   // the chunk being read
	n     int64 // bytes read of this member
	size  int64 // this member's size
	total int64 // bytes read of the file
	err   error // sticky: io.EOF at the file's end
}

func (r *diskReader) startMember(hdr *tar.Header, k int) error {
	name := path.Clean(hdr.Name)
	if c := r.d.ChunkSize; c > 0 && (hdr.Size <= 0 || hdr.Size > c) {
		return damaged(fmt.Errorf("OVA: chunk %q holds %d bytes; ovf:chunkSize is %d", name, hdr.Size, c))
	}
	h, err := r.o.hashFor(name)
	if err != nil {
		return err
	}
	r.hash, r.k, r.n, r.size = h, k, 0, hdr.Size
	return nil
}

func (r *diskReader) Read(p []byte) (int, error) {
	if len(p) == 0 && r.err == nil {
		return 0, nil // the tar reader would return (0, nil) forever
	}
	for r.err == nil {
		n, err := r.o.tr.Read(p)
		if n > 0 {
			r.hash.Write(p[:n])
			r.n += int64(n)
			r.total += int64(n)
			if err == io.EOF {
				err = nil // seen again on the next read
			}
			if err != nil {
				r.err = r.readErr(err)
			}
			return n, nil
		}
		switch {
		case err == io.EOF:
			r.err = r.endMember()
		case err != nil:
			r.err = r.readErr(err)
		}
	}
	return 0, r.err
}

// readErr is a failed read of the member: a cut archive says where.
func (r *diskReader) readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return tag(ErrTruncated, fmt.Errorf("OVA: the archive ends inside member %q after %d of its %d bytes (%d bytes of disk %s's file): it was cut short; download it again", r.hash.name, r.n, r.size, r.total, r.d.Description))
	}
	return ovaErr(err)
}

// endMember checks the member just read and, for a chunked file, moves to
// its next chunk: nil when there is one, io.EOF at the file's end.
func (r *diskReader) endMember() error {
	o, d := r.o, r.d
	if r.n != r.size {
		return damaged(fmt.Errorf("OVA: member %q ended after %d of %d bytes", r.hash.name, r.n, r.size))
	}
	if err := o.memberRead(r.hash); err != nil {
		return err
	}
	if d.ChunkSize == 0 {
		if sum, ok := r.hash.sums()["SHA256"]; ok {
			d.SHA256 = hex.EncodeToString(sum)
		}
		return r.done()
	}
	if d.Size > 0 && r.total > d.Size {
		return damaged(fmt.Errorf("OVA: the chunks of %q hold more than its ovf:size %d bytes", d.Href, d.Size))
	}
	// A short chunk is the last one; so is the one that reaches ovf:size.
	if r.n < d.ChunkSize || (d.Size > 0 && r.total == d.Size) {
		if d.Size > 0 && r.total != d.Size {
			return damaged(fmt.Errorf("OVA: the chunks of %q hold %d bytes, not its ovf:size %d", d.Href, r.total, d.Size))
		}
		return r.done()
	}
	// A full chunk: the next member must be the next chunk. The file ends
	// here only if the manifest, read already, lists no next chunk: an
	// archive cut at a member's boundary (or a missing chunk) would
	// otherwise pass for a shorter file.
	next := chunkName(d.Href, r.k+1)
	hdr, err := o.nextHeader()
	if err != nil && err != io.EOF {
		return err
	}
	after := "the archive's end"
	if hdr != nil {
		name := path.Clean(hdr.Name)
		if hdr.Typeflag == tar.TypeReg && name == next {
			return r.startMember(hdr, r.k+1)
		}
		if c, _, ok := o.chunkOf(name); ok && c == d {
			return damaged(fmt.Errorf("OVA: %q where %q must come: a chunk is missing, repeated or out of order", name, next))
		}
		after = fmt.Sprintf("%q", name)
	}
	switch _, listed := o.manifest[next]; {
	case d.Size > 0 && hdr == nil:
		return damaged(fmt.Errorf("OVA: the archive ends after %d of %q's %d bytes (ovf:size), before its chunk %q: the archive is incomplete", r.total, d.Href, d.Size, next))
	case d.Size > 0:
		return damaged(fmt.Errorf("OVA: %q ends after %d of its %d bytes (ovf:size), at %s instead of its chunk %q: the archive is incomplete", d.Href, r.total, d.Size, after, next))
	case o.manifest == nil || listed:
		return damaged(fmt.Errorf("OVA: %q's chunk %q is full (%d bytes) and %s follows it, not its chunk %q: without ovf:size nothing says the file ends there. Give its File ovf:size, or the archive is incomplete (a chunk missing, or cut short)", d.Href, r.hash.name, r.n, after, next))
	}
	o.pending = hdr
	return r.done()
}

func (r *diskReader) done() error {
	r.o.read[r.d] = true
	return io.EOF
}

// ovaErr says where a tar error came from; classify tells a damaged
// archive (permanent) from a failed read. An archive that ends inside a
// header or a member was cut short.
func ovaErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return tag(ErrTruncated, fmt.Errorf("OVA: the archive ends inside a member or its header: it was cut short; download it again (%w)", err))
	}
	return fmt.Errorf("OVA: %w", err)
}
