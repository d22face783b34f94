package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	imgcopy "github.com/vmdkpop/vmdkpop/imager/internal/copy"
	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// How an import reads its source: in order where it can (a stream, raw
// bytes, an OVA's member), in place at random offsets where it must (a
// local file, HTTP with Range), spooled to scratch space otherwise.

// runSafe runs the import, turning a panic into an error (this runs where
// main's recover cannot see), and removes spooled files.
func (j *importJob) runSafe() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v", r)
		}
		for _, p := range j.spools {
			os.Remove(p)
		}
	}()
	err = j.run()
	if err == nil {
		err = j.verifyChecksum()
	}
	if j.out != nil {
		err = j.finishTarget(err)
		if !j.outBlock { // a device's size was checked before writing
			err = target.VolumeTooSmall(err, filepath.Dir(j.outPath), j.outSize)
		}
	}
	return j.finishDisks(err)
}

func (j *importJob) run() error {
	switch {
	case j.vsphere != nil:
		return j.fromVSphere()
	case j.source == "-":
		stdin := source.Paced(j.ctx, os.Stdin, j.http.Pace, "stdin") // stops on a signal even while blocked
		return j.fromReader(bufio.NewReaderSize(j.hashed(stdin), source.HeadBytes), -1, nil, true)
	case isURL(j.source):
		s, err := source.OpenHTTP(j.ctx, j.source, j.http, j.log)
		if err != nil {
			return err
		}
		defer s.Close()
		return j.fromReader(bufio.NewReaderSize(j.hashed(s), source.HeadBytes), s.Size(), s, true)
	}
	return j.fromFile(j.source)
}

// hashed passes r through the source checksum, when one is wanted.
func (j *importJob) hashed(r io.Reader) io.Reader {
	if j.hash == nil {
		return r
	}
	return io.TeeReader(r, j.hash)
}

func (j *importJob) verifyChecksum() error {
	if j.hash == nil {
		return nil
	}
	got := j.hash.Sum(nil)
	j.res.SHA256 = hex.EncodeToString(got)
	if string(got) != string(j.wantSum) {
		return failed(errChecksumMismatch, fmt.Errorf("the source's sha256 is %x, not the expected %x", got, j.wantSum))
	}
	return nil
}

// fromReader imports a sequential source. size is its length if known;
// remote, when set, can re-read it with Range requests. outer is false for
// what was found inside a compressed file or an OVA. Whatever the import
// leaves unread is drained, so the checksum covers every byte.
func (j *importJob) fromReader(br *bufio.Reader, size int64, remote *source.HTTPStream, outer bool) error {
	if outer {
		j.outer = br
	}
	head, err := br.Peek(source.HeadBytes)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	format := j.sourceFormat
	if !outer && format == "ova" {
		format = "auto"
	}
	kind, err := source.Detect(head, format)
	if err != nil {
		return err
	}
	if err := j.allNeedsOVA(kind, outer); err != nil {
		return err
	}
	if !outer && kind == source.KindOVA {
		return fmt.Errorf("%w: an OVA inside an OVA or a compressed file", source.ErrFormat)
	}
	switch kind {
	case source.KindGzip, source.KindZstd:
		dr, err := source.Decompress(kind, br)
		if err != nil {
			return err
		}
		defer dr.Close()
		if err := j.fromReader(bufio.NewReaderSize(dr, source.HeadBytes), -1, nil, false); err != nil {
			return err
		}
	case source.KindOVA:
		if err := j.fromOVA(br); err != nil {
			return err
		}
	case source.KindStream:
		if err := j.fromStream(br); err != nil {
			return err
		}
	case source.KindRaw:
		if size < 0 && j.targetFormat == "vmdk" {
			return j.fromSpool(br, size, "a raw source of unknown size")
		}
		if err := j.fromRaw(br, size); err != nil {
			return err
		}
	case source.KindVMDK:
		if remote != nil {
			return j.fromRemote(br, remote, size, isDescriptor(head))
		}
		return j.fromSpool(br, size, "a VMDK that is not streamOptimized needs random access")
	}
	if outer {
		if _, err := io.Copy(io.Discard, source.WithContext(j.ctx, br)); err != nil {
			return err
		}
	}
	return nil
}

// fromFile imports a local file: VMDKs (chains and multi-extent images
// included) and raw files are read in place at random offsets.
func (j *importJob) fromFile(path string) error {
	f, err := source.OpenFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if j.hash != nil {
		if _, err := io.Copy(j.hash, source.WithContext(j.ctx, f)); err != nil {
			return err
		}
		if err := j.verifyChecksum(); err != nil {
			return err // before a byte is written
		}
		j.hash = nil
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	head := make([]byte, source.HeadBytes)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return err
	}
	kind, err := source.Detect(head[:n], j.sourceFormat)
	if err != nil {
		return err
	}
	if err := j.allNeedsOVA(kind, true); err != nil {
		return err
	}
	switch kind {
	case source.KindOVA, source.KindGzip, source.KindZstd:
		return j.fromReader(bufio.NewReaderSize(f, source.HeadBytes), -1, nil, true)
	case source.KindRaw:
		return j.fromImageFile(path, "raw")
	}
	return j.fromImageFile(path, "vmdk")
}

func (j *importJob) fromImageFile(path, format string) error {
	img, err := openImage(path, format, &j.paths)
	if err != nil {
		return err
	}
	defer img.Close()
	return j.fromImage(img)
}

// maxRemoteDescriptor bounds a descriptor read over http(s): ESXi's are a
// few KiB; anything this big is not a descriptor.
const maxRemoteDescriptor = 1 << 20

// isDescriptor: head is the start of a text descriptor, which names other
// files (extents, a parent).
func isDescriptor(head []byte) bool {
	k, err := vmdk.Probe(bytes.NewReader(head))
	return err == nil && k == vmdk.KindDescriptor
}

// fromRemote imports a VMDK at an http(s) URL: a descriptor (a
// datastore's vm.vmdk, a snapshot's vm-000001.vmdk) or a sparse file. The
// files it names, and its parents', are the URL's siblings, read in place
// with Range requests through the stream's client and session, never
// spooled. The URL's own file is read once, in order, through the
// checksum when one is wanted, and imported from what was read: a
// descriptor kept in memory, a sparse file spooled to scratch space
// (source.Overlay). Only a sparse file without --checksum, from a server
// that reads ranges, is read in place instead; its re-reads are held to
// the first reply's size and validator.
func (j *importJob) fromRemote(br *bufio.Reader, s *source.HTTPStream, size int64, descriptor bool) error {
	if err := localPathFlagsOnly(j.source, &j.paths); err != nil {
		return err
	}
	var top func(fs.FS, string) fs.FS
	local := "" // where the file was spooled
	switch {
	case descriptor:
		text, err := io.ReadAll(io.LimitReader(source.WithContext(j.ctx, br), maxRemoteDescriptor+1))
		if err != nil {
			return err
		}
		if len(text) > maxRemoteDescriptor {
			return fmt.Errorf("%s: %w: a text descriptor of more than %d bytes", jobapi.RedactURL(j.source), vmdk.ErrCorrupt, maxRemoteDescriptor)
		}
		if err := j.verifyChecksum(); err != nil {
			return err // before a byte is written
		}
		j.hash = nil
		top = func(fsys fs.FS, name string) fs.FS { return source.Overlay(fsys, name, text) }
	case j.hash != nil || !s.RangeOK() || size <= 0:
		why := "a VMDK that is not streamOptimized needs random access, and the server does not accept Range requests or give the file's size"
		if j.hash != nil {
			why = "with --checksum, a sparse VMDK is imported from the bytes the checksum verified, not read again"
		}
		var err error
		if local, err = j.spool(br, size, why); err != nil {
			return err
		}
		top = func(fsys fs.FS, name string) fs.FS { return source.OverlayFile(fsys, name, local) }
	}
	s.Close()
	hfs, name, err := s.FS(j.ctx)
	if err != nil && local != "" {
		// A URL that names no file (a download endpoint ending in "/")
		// has no siblings: the spooled file is all there is.
		return j.fromSpooled(local)
	}
	if err != nil {
		return err
	}
	var fsys fs.FS = hfs
	if top != nil {
		fsys = top(hfs, name)
	}
	d, err := vmdk.OpenFS(fsys, name, vmdk.Options{})
	if err != nil {
		return inRemote(j.source, err)
	}
	defer d.Close()
	return inRemote(j.source, j.fromImage(vmdkImage{d}))
}

// inRemote names the URL in an error of a VMDK read over http(s): vmdk's
// errors name the file as the FS knows it (vm-flat.vmdk), not where it
// is. Target errors are left alone.
func inRemote(rawURL string, err error) error {
	var te *target.Error
	if err == nil || errors.As(err, &te) {
		return err
	}
	for _, e := range []error{vmdk.ErrCorrupt, vmdk.ErrUnsupported, vmdk.ErrChainBroken, vmdk.ErrNotVMDK, vmdk.ErrInsecurePath, vmdk.ErrNoAccess, vmdk.ErrInvalidOptions} {
		if errors.Is(err, e) {
			return fmt.Errorf("%s: %w", jobapi.RedactURL(rawURL), err)
		}
	}
	return err
}

// fromSpool copies the rest of a sequential source to the scratch
// directory and imports it from there.
func (j *importJob) fromSpool(r io.Reader, size int64, why string) error {
	path, err := j.spool(r, size, why)
	if err != nil {
		return err
	}
	return j.fromSpooled(path)
}

// fromSpooled imports the VMDK spooled to local as the one file it is.
// Opened as a local VMDK it would resolve the extent and parent names it
// gives (which came from the network or an archive) in the scratch
// directory, importing whatever local files are there; so it is opened
// over a file system that holds only it. A monolithicSparse file still
// finds itself: its embedded descriptor's extent line is the file itself,
// whatever name it gives.
func (j *importJob) fromSpooled(local string) error {
	name := filepath.Base(local)
	d, err := vmdk.OpenFS(source.SpooledAlone(name, local), name, vmdk.Options{})
	if errors.Is(err, source.ErrNotSpooled) {
		return fmt.Errorf("%s: %w: a VMDK read from a stream, an archive or a compressed file names other files (%v); they are not in it (a descriptor's extents and parents stay beside it on the server): import the descriptor's URL directly, or a self-contained image (streamOptimized, monolithicSparse)",
			jobapi.RedactURL(j.source), vmdk.ErrUnsupported, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", jobapi.RedactURL(j.source), err)
	}
	defer d.Close()
	return j.fromImage(vmdkImage{d})
}

// spool copies the rest of a sequential source to the scratch directory
// and verifies its checksum, before a byte is written.
func (j *importJob) spool(r io.Reader, size int64, why string) (string, error) {
	if j.scratch == "" {
		return "", failed(source.ErrNoScratch, fmt.Errorf("%s: give --scratch-dir to spool it", why))
	}
	fmt.Fprintf(j.log, "imager: spooling the source to %s: %s\n", j.scratch, why)
	j.prog.Phase("spool")
	j.prog.SetTotal(size)
	limit, err := j.spoolLimit()
	if err != nil {
		return "", err
	}
	path, err := source.Spool(j.ctx, j.scratch, countingReader{r, j.prog}, limit)
	if path != "" {
		j.spools = append(j.spools, path)
		j.res.Spooled = true
	}
	if errors.Is(err, source.ErrTooBig) {
		return "", &target.TooSmallError{Msg: fmt.Sprintf("%v: more than the file of the largest disk the target takes (--max-size, the volume's space or the device's size)", err)}
	}
	if err != nil {
		return "", err
	}
	if j.hash != nil && j.outer != nil {
		// What was spooled may be part of the source (an OVA's member, a
		// compressed file's contents): the checksum covers the whole
		// source, so the rest of it goes through the hash first, an OVA's
		// members through their manifest check.
		if j.ova != nil {
			if err := j.ova.Finish(); err != nil {
				return "", err
			}
		}
		if _, err := io.Copy(io.Discard, source.WithContext(j.ctx, j.outer)); err != nil {
			return "", err
		}
	}
	if err := j.verifyChecksum(); err != nil {
		return "", err // before a byte is written
	}
	j.hash = nil
	j.prog.Phase("import")
	return path, nil
}

// fromImage copies a random-access image with parallel workers.
func (j *importJob) fromImage(img image) error {
	if v, ok := img.(vmdkImage); ok {
		j.describeSource(v.Descriptor())
	} else {
		j.res.SourceFormat = "raw"
	}
	t, err := j.openTarget(img.Size())
	if err != nil {
		return err
	}
	report := func(done int64) {
		if done >= 0 {
			j.prog.Set(done)
		}
	}
	if t.Ordered() {
		return imgcopy.InOrder(j.ctx, img, t, report)
	}
	return imgcopy.Image(j.ctx, img, t, report)
}

func (j *importJob) describeSource(d *vmdk.Descriptor) {
	j.res.SourceFormat = "vmdk"
	j.res.CreateType = d.CreateType
	j.res.CID = fmt.Sprintf("%08x", d.CID)
	j.res.ParentCID = fmt.Sprintf("%08x", d.ParentCID)
}

// fromStream imports a streamOptimized VMDK while it is read: grains are
// inflated in parallel and written as they arrive.
func (j *importJob) fromStream(r io.Reader) error {
	sr, err := vmdk.NewStreamReader(r)
	if err != nil {
		return err
	}
	defer sr.Close()
	return j.fromStreamReader(sr)
}

// fromStreamReader imports the grains of an open stream up to its proven
// end.
func (j *importJob) fromStreamReader(sr *vmdk.StreamReader) error {
	j.describeSource(sr.Descriptor())
	t, err := j.openTarget(sr.Size())
	if err != nil {
		return err
	}
	var pos int64
	for {
		if err := context.Cause(j.ctx); err != nil {
			return err
		}
		g, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := zeroGap(t, pos, g.Offset); err != nil {
			return err
		}
		if err := imgcopy.WriteSparse(t, g.Data, g.Offset); err != nil {
			return targetErr(err)
		}
		pos = g.Offset + int64(len(g.Data))
		j.prog.Set(pos)
	}
	return zeroGap(t, pos, max(j.outSize, sr.Size()))
}

// fromRaw imports raw bytes read in order; size < 0 when unknown.
func (j *importJob) fromRaw(r io.Reader, size int64) error {
	j.res.SourceFormat = "raw"
	t, err := j.openTarget(size)
	if err != nil {
		return err
	}
	buf := make([]byte, imgcopy.ChunkSize)
	var pos int64
	for {
		if err := context.Cause(j.ctx); err != nil {
			return err
		}
		n, err := fillBuf(r, buf)
		if n > 0 {
			if werr := imgcopy.WriteSparse(t, buf[:n], pos); werr != nil {
				return targetErr(werr)
			}
			pos += int64(n)
			j.prog.Set(pos)
		}
		if err == io.EOF {
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, source.ErrTruncated) {
			// A decompressor's stream that stopped inside its data: the
			// download was cut, never the disk's end.
			return failed(errTruncated, fmt.Errorf("the source ended after %d bytes of disk, inside its compressed stream (%v): it was cut short; download it again", pos, err))
		}
		if err != nil {
			return err
		}
	}
	if size >= 0 && pos != size {
		return failed(errTruncated, fmt.Errorf("the source ended after %d of %d bytes", pos, size))
	}
	j.rawRead = pos
	j.outSize = max(pos, j.size)
	j.res.VirtualSize = j.outSize // a source of unknown size: known now
	return nil
}

// fillBuf reads r into buf until buf is full or r ends: io.EOF only at r's
// own end. Unlike io.ReadFull, whose short read at r's end is
// io.ErrUnexpectedEOF, it passes r's io.ErrUnexpectedEOF (a gzip or zstd
// stream cut short) on as the failure it is.
func fillBuf(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

type countingReader struct {
	r io.Reader
	p *imgcopy.Progress
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.Add(int64(n))
	return n, err
}
