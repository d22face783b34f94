package vmdk

import (
	"context"
	"fmt"
	"syscall"
)

// Commit writes what the image at path stores itself into its parent, then
// keeps the chain valid (qemu-img commit leaves the child pointing at the
// parent's old CID). Other children of the parent are not known here and
// would see their chain broken, as they must: their parent's content
// changed.
//
// Everything that can be known is checked before the first byte: the
// chain, the sizes, that both images open for writing, that every parent
// extent the data lands in is writable, that both descriptors can be
// rewritten, and that the parent's filesystems have room for the grains
// it must allocate. The writes are then ordered so that a failure at any
// point (an I/O error, a full disk, ctx done) leaves the image reading as
// before and re-running Commit completes the job:
//
//  1. the parent gets a new CID, the first change to it;
//  2. the image records that CID as its parentCID (if this fails, the
//     parent's old CID is put back: nothing else changed yet);
//  3. the image's data is copied into the parent and flushed. The image
//     reads the same throughout, since its reads of what it stores itself
//     never reach the parent, and the parent only changes under those.
//
// Between 1 and 2 only an interruption of the process itself (power loss)
// leaves the chain broken, with the parent's content untouched: rebase -u
// onto the parent repairs exactly that.
func Commit(ctx context.Context, path string, opts Options) error {
	rw := opts
	rw.ReadWrite = true
	child, err := Open(path, rw)
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
	parent, err := Open(child.parent.Path(), rw)
	if err != nil {
		return fmt.Errorf("commit into %s: %w", child.parent.Path(), err)
	}
	defer parent.Close()
	cid := newCID()
	if err := checkCommit(ctx, child, parent, cid); err != nil {
		return fmt.Errorf("commit into %s: %w", parent.Path(), err)
	}
	oldCID := parent.CID()
	if err := parent.setCID(cid); err != nil {
		return fmt.Errorf("commit into %s: %w", parent.Path(), err)
	}
	if err := child.setParent(child.ParentFileNameHint(), cid); err != nil {
		if rerr := parent.setCID(oldCID); rerr != nil {
			return fmt.Errorf("%s: relink to the committed parent: %w (and putting back the parent's CID %08x failed: %w; rebase -u onto it repairs the link)", path, err, oldCID, rerr)
		}
		return fmt.Errorf("%s: relink to the committed parent: %w", path, err)
	}
	buf := make([]byte, ownRangeStep)
	err = ownRanges(ctx, child, func(off, n int64) error { return copyRange(child, parent, buf[:n], off) })
	if err == nil {
		err = parent.Flush()
	}
	if err != nil {
		return fmt.Errorf("commit into %s stopped part-way (the image reads as before; running commit again completes it): %w", parent.Path(), err)
	}
	return nil
}

// checkCommit is Commit's validation: what would make it fail after its
// first write, found before it.
func checkCommit(ctx context.Context, child, parent *Disk, cid uint32) error {
	pd := *parent.descriptor
	pd.CID = cid
	if err := parent.descriptorFits(&pd); err != nil {
		return err
	}
	cd := *child.descriptor
	cd.ParentCID = cid
	if err := child.descriptorFits(&cd); err != nil {
		return err
	}
	need := map[*source]int64{}
	err := ownRanges(ctx, child, func(off, n int64) error {
		if err := parent.checkWritable(off, n); err != nil {
			return err
		}
		return parent.growth(off, n, need)
	})
	if err != nil {
		return err
	}
	for s, n := range need {
		var st syscall.Statfs_t
		if err := syscall.Statfs(s.name, &st); err != nil {
			return fmt.Errorf("%s: free space: %w", s.name, err)
		}
		if free := int64(st.Bavail) * st.Bsize; free < n {
			return fmt.Errorf("%s: %w: committing needs %d bytes of new grains, the filesystem has %d free", s.name, syscall.ENOSPC, n, free)
		}
	}
	return nil
}

// ownRanges calls f for each range whose content src stores itself (data
// or zeroed grains of depth 0), in order.
func ownRanges(ctx context.Context, src *Disk, f func(off, n int64) error) error {
	for off := int64(0); off < src.Size(); {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := src.BlockStatus(off, min(src.Size()-off, ownRangeStep))
		if err != nil {
			return err
		}
		if m.Depth == 0 && (m.Data || m.Zero) {
			if err := f(off, m.Length); err != nil {
				return err
			}
		}
		off += m.Length
	}
	return nil
}

// ownRangeStep is the most ownRanges gives at once.
const ownRangeStep = 4 << 20

// copyRange copies len(b) bytes at off from src into dst, through b.
func copyRange(src, dst *Disk, b []byte, off int64) error {
	if _, err := src.ReadAt(b, off); err != nil {
		return err
	}
	_, err := dst.WriteAt(b, off)
	return err
}

// setCID gives a writable disk a new CID, durably, before any content
// changes (WriteAt then keeps it).
func (d *Disk) setCID(cid uint32) error {
	if !d.writable {
		return fmt.Errorf("%s: %w: opened without ReadWrite", d.path, ErrReadOnly)
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	old := d.descriptor.CID
	d.descriptor.CID = cid
	if err := d.writeDescriptor(); err != nil {
		d.descriptor.CID = old
		return err
	}
	d.cidChanged = true
	return nil
}
