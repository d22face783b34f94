package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrReadOnly is returned by writes to a disk not opened with ReadWrite, or
// to a read-only, NOACCESS or ZERO extent.
var ErrReadOnly = errors.New("vmdk: read-only")

// WriteAt writes guest content at off. Grains only partly written are
// completed from the backing chain (copy-on-write). The first write after
// Open gives the disk a new CID, made durable before any data, so children
// made from the old content see the change instead of reading a mix.
// Written data is durable once Flush returns.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	if !d.writable {
		return 0, fmt.Errorf("%s: %w: opened without ReadWrite", d.path, ErrReadOnly)
	}
	if off < 0 || off > d.size || int64(len(p)) > d.size-off {
		return 0, fmt.Errorf("%s: %w: write of %d bytes at %d passes the disk size %d", d.path, ErrOutOfRange, len(p), off, d.size)
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	// Refuse before the CID changes or any byte is written, rather than
	// part-way through a write that spans a read-only extent. (Under the
	// write lock: the checks build the write guard.)
	if err := d.checkWritable(off, int64(len(p))); err != nil {
		return 0, err
	}
	if !d.cidChanged {
		d.descriptor.CID = newCID()
		if err := d.writeDescriptor(); err != nil {
			return 0, err
		}
		d.cidChanged = true
	}
	done := 0
	for done < len(p) {
		pe := &d.extents[d.extentAt(off)]
		rel := off - pe.start
		n := int(min(int64(len(p)-done), pe.size-rel))
		if err := d.writeExtent(pe, p[done:done+n], rel); err != nil {
			return done, err
		}
		done += n
		off += int64(n)
	}
	return done, nil
}

// checkWritable reports why a write to [off, off+n) would fail part-way
// (an extent that is not RW, not a writable type, compressed, or a grain
// table the directory does not have), before anything is written.
func (d *Disk) checkWritable(off, n int64) error {
	for end := off + n; off < end; {
		pe := &d.extents[d.extentAt(off)]
		rel := off - pe.start
		m := min(end-off, pe.size-rel)
		if pe.line.Access != AccessRW {
			return fmt.Errorf("%s: %w: extent %q is %s", d.path, ErrReadOnly, pe.line.File, pe.line.Access)
		}
		switch e := pe.ext.(type) {
		case *flatExtent:
			if e.src.f == nil {
				return fmt.Errorf("%s: %w: write to an image opened from a reader", e.src.name, ErrUnsupported)
			}
			if err := d.checkFlatAlias(e, e.base+rel, m); err != nil {
				return err
			}
		case *sparseExtent:
			if err := e.checkWritable(rel, m); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: %w: extent %q is %s", d.path, ErrReadOnly, pe.line.File, pe.line.Type)
		}
		off += m
	}
	return nil
}

// checkFlatAlias refuses, with ErrCorrupt, a write to bytes [at, at+n) of
// flat extent e's file that the disk's descriptor file or a sparse extent
// in the same file (its header, descriptor, directories, tables or
// grains) occupies: a descriptor may name one file in several lines, and
// such a write would damage the image instead of changing guest content.
// A flat extent past a sparse extent's last grain stays writable (new
// grains go after the end of the file).
func (d *Disk) checkFlatAlias(e *flatExtent, at, n int64) error {
	if d.kind == KindDescriptor && len(d.sources) > 0 && d.sources[0] == e.src {
		return fmt.Errorf("%s: %w: a flat extent is the descriptor file itself; refusing to write over the descriptor", d.path, ErrCorrupt)
	}
	sparse := map[*sparseExtent]bool{}
	if d.self != nil {
		sparse[d.self] = true
	}
	for _, pe := range d.extents {
		if se, ok := pe.ext.(*sparseExtent); ok {
			sparse[se] = true
		}
	}
	for se := range sparse {
		if se.src != e.src {
			continue
		}
		end, err := se.usedEnd()
		if err != nil {
			return err
		}
		if at < end {
			return fmt.Errorf("%s: %w: flat extent bytes %d-%d of %s lie in the sparse extent in the same file (its metadata and grains end at byte %d); refusing to write over them", d.path, ErrCorrupt, at, at+n, e.src.name, end)
		}
	}
	return nil
}

// growth adds to need, per file, the bytes of new grains a write of
// [off, off+n) would append (every grain not stored as data yet: an upper
// bound, as a zero write may need none).
func (d *Disk) growth(off, n int64, need map[*source]int64) error {
	for end := off + n; off < end; {
		pe := &d.extents[d.extentAt(off)]
		rel := off - pe.start
		m := min(end-off, pe.size-rel)
		if e, ok := pe.ext.(*sparseExtent); ok {
			for g := rel / e.grainBytes; g*e.grainBytes < rel+m; g++ {
				gte, err := e.gte(g)
				if err != nil {
					return err
				}
				if e.kindOf(gte) != runData {
					need[e.src] += e.grainBytes
				}
			}
		}
		off += m
	}
	return nil
}

func (d *Disk) writeExtent(pe *placedExtent, p []byte, rel int64) error {
	if pe.line.Access != AccessRW {
		return fmt.Errorf("%s: %w: extent %q is %s", d.path, ErrReadOnly, pe.line.File, pe.line.Access)
	}
	switch e := pe.ext.(type) {
	case *flatExtent:
		if _, err := e.src.f.WriteAt(p, e.base+rel); err != nil {
			return fmt.Errorf("%s: write: %w", e.src.name, err)
		}
		return nil
	case *sparseExtent:
		var fill func([]byte, int64) error
		if d.parent != nil || d.chainErr != nil {
			fill = func(b []byte, extOff int64) error { return d.readParent(b, pe.start+extOff) }
		}
		return e.write(p, rel, fill)
	}
	return fmt.Errorf("%s: %w: extent %q is %s", d.path, ErrReadOnly, pe.line.File, pe.line.Type)
}

// Flush makes everything written so far durable: grain data first, then
// the grain tables that point at it.
func (d *Disk) Flush() error { return d.flush(true) }

// CloseUnsynced closes the disk like Close, but writes the changed grain
// tables without first syncing the grains they point at: no fsync at all,
// what qemu-img's cache=unsafe does. Close's sync of the grains is a
// device flush of everything written (a third of a raw-to-monolithicSparse
// conversion's time), there only to order the tables after their data on
// disk. It is for a caller that asked for no durability and will not use
// the image after a power cut unless it synced it first (a conversion
// under a temporary name, with -t unsafe): after a power cut before such
// a sync, a table entry may point at a grain that never reached the disk
// and reads as zeros or stale bytes, as a raw file's unsynced pages do.
func (d *Disk) CloseUnsynced() error {
	err := d.writeTablesUnsynced()
	if cerr := d.Close(); err == nil {
		err = cerr // Close finds no table changed: it syncs nothing
	}
	return err
}

// writeTablesUnsynced writes every changed grain table (and its redundant
// copy) without syncing anything.
func (d *Disk) writeTablesUnsynced() error {
	if !d.writable {
		return nil
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	for _, pe := range d.extents {
		if e, ok := pe.ext.(*sparseExtent); ok {
			if err := e.writeDirtyTables(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush writes the changed grain tables after the data they point at is
// synced; durable also syncs the tables after (Close leaves that out, like
// any file close: the tables are in the OS, not yet on disk).
func (d *Disk) flush(durable bool) error {
	if !d.writable {
		return nil
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	for _, pe := range d.extents {
		switch e := pe.ext.(type) {
		case *sparseExtent:
			if err := e.flush(durable); err != nil {
				return err
			}
		case *flatExtent:
			if !durable {
				continue
			}
			if err := e.src.f.Sync(); err != nil {
				return fmt.Errorf("%s: sync: %w", e.src.name, err)
			}
		}
	}
	return nil
}

// writeDescriptor stores the descriptor durably: in place inside a sparse
// extent, or as a new descriptor file renamed over the old one.
//
// An embedded descriptor is rewritten only in the sectors that change. A
// new CID changes one line of the same length: one sector, one write,
// which a disk does not tear. A change that moves text (a parent name of
// another length shifts every line after it) changes several sectors, and
// a power cut could keep any mix of their old and new contents, which
// may not parse or may name other extents. Those go in three steps, each
// synced: the new descriptor without its DDB, NUL-terminated, in the first
// sector alone (readers stop at the NUL: qemu reads a C string,
// ParseDescriptor ignores what follows); the rest of the new text behind
// it; then the first sector's own text. Every state in between reads as
// the old or the new descriptor (the middle one without its DDB lines).
func (d *Disk) writeDescriptor() error {
	if err := d.descriptorFits(d.descriptor); err != nil {
		return err
	}
	text := d.descriptor.Format()
	if d.kind == KindDescriptor {
		return writeFileAtomic(d.path, text)
	}
	at := int64(d.header.DescriptorOffset) * SectorSize
	buf := make([]byte, int64(d.header.DescriptorSize)*SectorSize)
	copy(buf, text)
	old := make([]byte, len(buf))
	if err := d.self.src.readFull(old, at, "embedded descriptor"); err != nil {
		return err
	}
	var changed []int // sectors of the room that differ
	for s := 0; s < len(buf); s += SectorSize {
		if !bytes.Equal(buf[s:s+SectorSize], old[s:s+SectorSize]) {
			changed = append(changed, s)
		}
	}
	if first, ok := firstSectorDescriptor(d.descriptor); ok && len(changed) > 1 {
		var rest []int
		for _, s := range changed {
			if s != 0 {
				rest = append(rest, s)
			}
		}
		if err := d.writeRoomSectors(at, first, []int{0}); err != nil {
			return err
		}
		if err := d.writeRoomSectors(at, buf, rest); err != nil {
			return err
		}
		changed = []int{0}
	}
	return d.writeRoomSectors(at, buf, changed)
}

// firstSectorDescriptor is desc without its DDB as a NUL-terminated text
// that fits one sector, if it does.
func firstSectorDescriptor(desc *Descriptor) ([]byte, bool) {
	short := *desc
	short.DDB = nil
	text := short.Format()
	if len(text) >= SectorSize {
		return nil, false
	}
	return append(text, make([]byte, SectorSize-len(text))...), true
}

// writeRoomSectors writes the given sectors (byte offsets into room) of
// room at byte at of the image's own file, then syncs it.
func (d *Disk) writeRoomSectors(at int64, room []byte, sectors []int) error {
	for _, s := range sectors {
		if err := d.self.pwrite(room[s:s+SectorSize], at+int64(s), "descriptor"); err != nil {
			return err
		}
	}
	return d.self.src.f.Sync()
}

// descriptorFits reports whether desc can be written as d's descriptor:
// a descriptor file, or an embedded descriptor whose text fits the space
// the header gives it (checked before a write path's first byte).
func (d *Disk) descriptorFits(desc *Descriptor) error {
	switch d.kind {
	case KindDescriptor:
		return nil
	case KindSparse:
		h := d.header
		room := int64(h.DescriptorSize) * SectorSize
		if n := int64(len(desc.Format())); h.DescriptorOffset == 0 || n > room {
			return fmt.Errorf("%s: %w: the descriptor (%d bytes) does not fit its %d-byte space", d.path, ErrUnsupported, n, room)
		}
		return nil
	}
	return fmt.Errorf("%s: %w: a bare extent has no descriptor to update", d.path, ErrUnsupported)
}

// writeFileAtomic replaces path with data durably: a temporary file is
// written and synced, renamed over path, and the directory synced.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := host.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer host.Remove(tmp.Name())
	if _, err = tmp.Write(data); err == nil {
		if err = tmp.Chmod(0o644); err == nil {
			err = tmp.Sync()
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = host.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	f, err := host.OpenFile(dir, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
