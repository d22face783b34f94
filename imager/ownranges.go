package main

import (
	"context"
	"fmt"
	"io"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// copyChunk is how much of a range is read and written at once.
const copyChunk = 1 << 20

// ownRanges counts what copyOwnRanges did.
type ownRanges struct {
	Ranges  int64 // mappings the top links define
	Read    int64 // bytes of data read from them
	Written int64 // bytes written to w, zeros included
}

// copyOwnRanges writes to w, at the same offsets, what d's top `above`
// links define (Mapping.Depth < above) and nothing else: data as read,
// and zeros where those links read as zeros (a zeroed grain hides its
// parent's bytes, so it is written, never skipped). The delta import
// writes S2's links above S1 into a child VMDK with it, apply-delta a
// delta's own layer (above 1) onto a raw disk. seen, when set, is called
// with every mapping, the skipped ones included (progress). name is d's
// name for messages.
func copyOwnRanges(ctx context.Context, d *vmdk.Disk, name string, above int, w io.WriterAt, seen func(vmdk.Mapping)) (ownRanges, error) {
	var n ownRanges
	buf := make([]byte, copyChunk)
	err := d.MapEach(ctx, func(m vmdk.Mapping) error {
		if seen != nil {
			defer seen(m)
		}
		if m.Depth >= above {
			return nil // the parent's: the target has it
		}
		if m.NoAccess {
			return fmt.Errorf("%s: %w: bytes [%d, +%d) are in a NOACCESS extent", name, vmdk.ErrNoAccess, m.Offset, m.Length)
		}
		n.Ranges++
		data := m.Data && !m.Zero
		if !data {
			// Zeros written, not a hole punched: a filesystem without
			// punch support would fail here, and a hole saves nothing
			// the next writes would not fill again; on a device, zeros
			// too.
			clear(buf)
		}
		for off, end := m.Offset, m.Offset+m.Length; off < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			p := buf[:min(int64(len(buf)), end-off)]
			if data {
				if _, err := d.ReadAt(p, off); err != nil {
					return fmt.Errorf("%s: read at byte %d: %w", name, off, err)
				}
				n.Read += int64(len(p))
			}
			if _, err := w.WriteAt(p, off); err != nil {
				return targetErr(err)
			}
			n.Written += int64(len(p))
			off += int64(len(p))
		}
		return nil
	})
	return n, err
}
