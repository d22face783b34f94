package vmdk

import (
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

// flush writes the changed grain tables; durable syncs the data before them
// and the tables after (Close writes tables without syncing, like any file
// close: the data is in the OS, not yet on disk).
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
func (d *Disk) writeDescriptor() error {
	text := d.descriptor.Format()
	if d.kind == KindSparse {
		h := d.header
		room := int64(h.DescriptorSize) * SectorSize
		if h.DescriptorOffset == 0 || int64(len(text)) > room {
			return fmt.Errorf("%s: %w: the descriptor (%d bytes) does not fit its %d-byte space", d.path, ErrUnsupported, len(text), room)
		}
		buf := make([]byte, room)
		copy(buf, text)
		self := d.extents[0].ext.(*sparseExtent)
		if err := self.pwrite(buf, int64(h.DescriptorOffset)*SectorSize, "descriptor"); err != nil {
			return err
		}
		return self.src.f.Sync()
	}
	if d.kind != KindDescriptor {
		return fmt.Errorf("%s: %w: a bare extent has no descriptor to update", d.path, ErrUnsupported)
	}
	return writeFileAtomic(d.path, text)
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
