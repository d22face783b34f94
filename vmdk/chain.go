package vmdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
)

// setParent records a new parent in the descriptor of a writable disk
// without touching its content (so its own CID stays).
func (d *Disk) setParent(hint string, cid uint32) error {
	if !d.writable {
		return fmt.Errorf("%s: %w: opened without ReadWrite", d.path, ErrReadOnly)
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.descriptor.ParentFileNameHint, d.descriptor.ParentCID = hint, cid
	return d.writeDescriptor()
}

// copyLayer copies the ranges of src whose mapping want accepts into dst at
// the same offsets.
func copyLayer(ctx context.Context, src, dst *Disk, want func(m Mapping) bool) error {
	buf := make([]byte, 4<<20)
	for off := int64(0); off < src.Size(); {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := src.BlockStatus(off, min(src.Size()-off, int64(len(buf))))
		if err != nil {
			return err
		}
		if want(m) {
			b := buf[:m.Length]
			if _, err := src.ReadAt(b, off); err != nil {
				return err
			}
			if _, err := dst.WriteAt(b, off); err != nil {
				return err
			}
		}
		off += m.Length
	}
	return nil
}

// Commit writes what the image at path stores itself into its parent, then
// records the parent's new CID in the image, so the chain stays valid
// (qemu-img commit leaves the child pointing at the parent's old CID).
// Other children of the parent are not known here and would see their
// chain broken, as they must: their parent's content changed.
func Commit(ctx context.Context, path string, opts Options) error {
	ro := opts
	ro.ReadWrite = false
	child, err := Open(path, ro)
	if err != nil {
		return err
	}
	defer child.Close()
	if child.parent == nil {
		return fmt.Errorf("%s: %w: no backing file to commit into", path, ErrInvalidOptions)
	}
	if err := child.ChainError(); err != nil {
		return err
	}
	if child.Size() > child.parent.Size() {
		return fmt.Errorf("%s: %w: the image (%d bytes) is larger than its parent (%d bytes)", path, ErrUnsupported, child.Size(), child.parent.Size())
	}
	rw := ro
	rw.ReadWrite = true
	parent, err := Open(child.parent.Path(), rw)
	if err != nil {
		return err
	}
	err = copyLayer(ctx, child, parent, func(m Mapping) bool { return m.Depth == 0 && (m.Data || m.Zero) })
	if err == nil {
		err = parent.Flush()
	}
	newCID := parent.CID()
	if cerr := parent.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("commit into %s: %w", child.parent.Path(), err)
	}
	return relink(path, rw, child.ParentFileNameHint(), newCID)
}

func relink(path string, rw Options, hint string, cid uint32) error {
	d, err := Open(path, rw)
	if err != nil {
		return err
	}
	err = d.setParent(hint, cid)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// RebaseOptions controls Rebase.
type RebaseOptions struct {
	// Options opens the image and the new backing file (its ReadWrite is
	// ignored: the image is opened for writing, the backing read-only).
	Options
	// Unsafe changes only the descriptor and copies no data (for backing
	// files that were moved or copied).
	Unsafe bool
}

// Rebase makes the image at path a child of newBacking ("" for none). In
// safe mode the image's content is kept: wherever it falls through to its
// backing and the old and new backings differ, the old content is copied
// into the image first. With opts.Unsafe, only the descriptor changes.
// Rebase stops when ctx is done, returning ctx's error; the image then
// still reads the same as before (copied ranges hold the old content).
func Rebase(ctx context.Context, path, newBacking string, opts RebaseOptions) error {
	o := opts.Options
	o.ReadWrite = true
	var hint string
	cid := NoParentCID
	var nb *Disk
	if newBacking != "" {
		ro := o
		ro.ReadWrite = false
		var err error
		if nb, err = Open(newBacking, ro); err != nil {
			return fmt.Errorf("new backing file: %w", err)
		}
		defer nb.Close()
		cid = nb.CID()
		absNew, err1 := filepath.Abs(newBacking)
		absDir, err2 := filepath.Abs(filepath.Dir(path))
		if err1 != nil || err2 != nil {
			return fmt.Errorf("new backing file %s: cannot make a relative path: %w", newBacking, errors.Join(err1, err2))
		}
		if hint, err = filepath.Rel(absDir, absNew); err != nil {
			return fmt.Errorf("new backing file %s: %w: %w", newBacking, ErrInvalidOptions, err)
		}
	}
	d, err := Open(path, o)
	if err != nil {
		return err
	}
	defer d.Close()
	if newBacking != "" && isFlat(d) {
		return fmt.Errorf("%s: %w: flat images cannot have a backing file", path, ErrUnsupported)
	}
	if !opts.Unsafe {
		if err := d.ChainError(); err != nil && d.parent != nil {
			return fmt.Errorf("safe rebase needs the old backing chain: %w", err)
		}
		a, b := make([]byte, 4<<20), make([]byte, 4<<20)
		for off := int64(0); off < d.Size(); {
			if err := ctx.Err(); err != nil {
				return err
			}
			m, err := d.BlockStatus(off, min(d.Size()-off, int64(len(a))))
			if err != nil {
				return err
			}
			if m.Depth > 0 || !m.Allocated {
				// Falls through: old content vs the new backing's.
				old, nw := a[:m.Length], b[:m.Length]
				if _, err := d.ReadAt(old, off); err != nil {
					return err
				}
				clear(nw)
				if nb != nil && off < nb.Size() {
					if _, err := nb.ReadAt(nw[:min(m.Length, nb.Size()-off)], off); err != nil {
						return err
					}
				}
				if !bytes.Equal(old, nw) {
					if _, err := d.WriteAt(old, off); err != nil {
						return err
					}
				}
			}
			off += m.Length
		}
		if err := d.Flush(); err != nil {
			return err
		}
	}
	return d.setParent(hint, cid)
}

func isFlat(d *Disk) bool {
	for _, e := range d.extents {
		if _, ok := e.ext.(*flatExtent); ok {
			return true
		}
	}
	return false
}
