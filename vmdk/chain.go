package vmdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
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
	old := *d.descriptor
	d.descriptor.ParentFileNameHint, d.descriptor.ParentCID = hint, cid
	if err := d.writeDescriptor(); err != nil {
		*d.descriptor = old
		return err
	}
	return nil
}

// openOwn opens the image at path for writing without its backing chain:
// enough to relink an image whose chain is missing, broken or cyclic.
func openOwn(path string, opts Options) (*Disk, error) {
	opts.ReadWrite = true
	o := opener{opts: opts, seen: map[fileID]bool{}, noParent: true}
	if o.opts.MaxChainDepth == 0 {
		o.opts.MaxChainDepth = DefaultMaxChainDepth
	}
	return o.open(path, 0)
}

// fileIDs are the device and inode of every file d itself opened (not its
// chain's): the same file whatever path, link or symlink reached it.
func (d *Disk) fileIDs() map[fileID]bool {
	ids := map[fileID]bool{}
	for _, s := range d.sources {
		if s.f == nil {
			continue
		}
		if id, ok := statID(s.f); ok {
			ids[id] = true
		}
	}
	return ids
}

// checkNewBacking refuses to make nb the parent of d when the result
// could not be opened again: nb or a disk of its chain is d itself (or
// shares a file with it), which would be a cycle that reads never end in;
// the chain would grow past opts' depth limit; or the hint d would record
// leads elsewhere (or nowhere) under opts' path rules.
func checkNewBacking(d, nb *Disk, hint string, opts Options) error {
	own := d.fileIDs()
	depth := 0
	for p := nb; p != nil; p = p.parent {
		depth++
		for id := range p.fileIDs() {
			if own[id] {
				what := "is the image itself"
				if p != nb {
					what = fmt.Sprintf("has %s, a file of the image, in its backing chain", p.path)
				}
				return fmt.Errorf("%s: %w: %w: the new backing file %s %s: the chain would be a cycle", d.path, ErrInvalidOptions, ErrChainBroken, nb.path, what)
			}
		}
	}
	limit := opts.MaxChainDepth
	if limit == 0 {
		limit = DefaultMaxChainDepth
	}
	if depth+1 > limit {
		return fmt.Errorf("%s: %w: %w: over %s the chain would be %d deep, more than %d", d.path, ErrInvalidOptions, ErrChainBroken, nb.path, depth+1, limit)
	}
	o := opener{opts: opts}
	path, err := o.resolve(filepath.Dir(d.path), hint)
	if err != nil {
		return fmt.Errorf("%s: new backing file %s: %w", d.path, nb.path, err)
	}
	a, err1 := os.Stat(path)
	b, err2 := os.Stat(nb.path)
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		return fmt.Errorf("%s: %w: the backing file name %q would not lead to %s", d.path, ErrInvalidOptions, hint, nb.path)
	}
	return nil
}

// parentHint is the parentFileNameHint naming parent from child: a path
// relative to child's directory.
func parentHint(child, parent string) (string, error) {
	absNew, err1 := filepath.Abs(parent)
	absDir, err2 := filepath.Abs(filepath.Dir(child))
	if err1 != nil || err2 != nil {
		return "", fmt.Errorf("new backing file %s: cannot make a relative path: %w", parent, errors.Join(err1, err2))
	}
	hint, err := filepath.Rel(absDir, absNew)
	if err != nil {
		return "", fmt.Errorf("new backing file %s: %w: %w", parent, ErrInvalidOptions, err)
	}
	return hint, nil
}

// RebaseOptions controls Rebase.
type RebaseOptions struct {
	// Options opens the image and the new backing file (its ReadWrite is
	// ignored: the image is opened for writing, the backing read-only).
	Options
	// Unsafe changes only the descriptor and copies no data (for backing
	// files that were moved or copied). The old chain is not opened, so an
	// image whose chain is missing, broken or cyclic can be relinked.
	Unsafe bool
}

// Rebase makes the image at path a child of newBacking ("" for none). In
// safe mode the image's content is kept: wherever it falls through to its
// backing and the old and new backings differ, the old content is copied
// into the image first. With opts.Unsafe, only the descriptor changes.
// A new backing whose chain holds the image itself (a cycle), or that
// the image could not reach again, is refused before anything is written.
// Rebase stops when ctx is done, returning ctx's error; the image then
// still reads the same as before (copied ranges hold the old content).
func Rebase(ctx context.Context, path, newBacking string, opts RebaseOptions) error {
	o := opts.Options
	o.ReadWrite = true
	var d *Disk
	var err error
	if opts.Unsafe {
		d, err = openOwn(path, o)
	} else {
		d, err = Open(path, o)
	}
	if err != nil {
		return err
	}
	defer d.Close()
	var hint string
	cid := NoParentCID
	var nb *Disk
	if newBacking != "" {
		ro := o
		ro.ReadWrite = false
		if nb, err = Open(newBacking, ro); err != nil {
			return fmt.Errorf("new backing file: %w", err)
		}
		defer nb.Close()
		if hint, err = parentHint(path, newBacking); err != nil {
			return err
		}
		if err := checkNewBacking(d, nb, hint, o); err != nil {
			return err
		}
		cid = nb.CID()
		if isFlat(d) {
			return fmt.Errorf("%s: %w: flat images cannot have a backing file", path, ErrUnsupported)
		}
	}
	if !opts.Unsafe {
		if err := d.ChainError(); err != nil && d.parent != nil {
			return fmt.Errorf("safe rebase needs the old backing chain: %w", err)
		}
		if err := keepFallThrough(ctx, d, nb); err != nil {
			return err
		}
	}
	return d.setParent(hint, cid)
}

// keepFallThrough copies into d the content it reads from its old backing
// wherever the new backing nb (nil: none) reads differently.
func keepFallThrough(ctx context.Context, d, nb *Disk) error {
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
	return d.Flush()
}

func isFlat(d *Disk) bool {
	for _, e := range d.extents {
		if _, ok := e.ext.(*flatExtent); ok {
			return true
		}
	}
	return false
}
