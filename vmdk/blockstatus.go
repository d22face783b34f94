package vmdk

import (
	"context"
	"fmt"
)

// Mapping describes where a range of guest content comes from.
type Mapping struct {
	Offset, Length int64
	// Data: the content is stored in a grain or flat extent (it may still
	// happen to contain zeros). Zero: it reads as zeros with nothing stored
	// (zeroed grain, ZERO extent, hole at the end of the chain).
	Data, Zero bool
	// Allocated: some layer of the chain defines the range (false for holes
	// that fall through the whole chain).
	Allocated bool
	// NoAccess: the range is in a NOACCESS extent and cannot be read.
	NoAccess bool
	// Depth is the chain layer that supplies the content (0 = this disk);
	// for holes it is the chain's length.
	Depth int
	// File and HostOffset locate uncompressed data; HostOffset is -1 for
	// compressed grains and for ranges without data.
	File       string
	HostOffset int64
	Compressed bool
}

// BlockStatus returns the mapping of the longest prefix of [off, off+n)
// that comes from one place. n must be positive and off+n <= Size().
func (d *Disk) BlockStatus(off, n int64) (Mapping, error) {
	if off < 0 || n <= 0 || off >= d.size || n > d.size-off {
		return Mapping{}, fmt.Errorf("%s: %w: block status of [%d, +%d) outside the disk", d.path, ErrOutOfRange, off, n)
	}
	return d.blockStatus(off, n, 0)
}

func (d *Disk) blockStatus(off, n int64, depth int) (Mapping, error) {
	pe := &d.extents[d.extentAt(off)]
	rel := off - pe.start
	r, err := pe.ext.lookup(rel, min(n, pe.size-rel))
	if err != nil {
		return Mapping{}, err
	}
	m := Mapping{Offset: off, Length: r.n, Depth: depth, HostOffset: -1, Allocated: true}
	switch r.kind {
	case runData:
		// A flat extent's hole is data that reads as zeros (qemu-img map:
		// "data": true, "zero": true).
		m.Data, m.Zero, m.File, m.HostOffset = true, r.hole, pe.ext.file().name, r.host
	case runCompressed:
		m.Data, m.Compressed, m.File = true, true, pe.ext.file().name
	case runZero:
		m.Zero = true
	case runNoAccess:
		m.NoAccess = true
	case runUnallocated:
		if d.chainErr != nil {
			return Mapping{}, fmt.Errorf("status at byte %d needs the parent: %w", off, d.chainErr)
		}
		if d.parent == nil || off >= d.parent.size {
			m.Zero, m.Allocated, m.Depth = true, false, depth+d.chainLength()
			return m, nil
		}
		pm, err := d.parent.blockStatus(off, min(r.n, d.parent.size-off), depth+1)
		return pm, err
	}
	return m, nil
}

// Map returns the whole disk's mappings in order, adjacent ranges of the
// same kind merged. Its length is bounded by what the image allocates,
// which a small hostile file can make large: MapEach streams instead.
func (d *Disk) Map(ctx context.Context) ([]Mapping, error) {
	var out []Mapping
	err := d.MapEach(ctx, func(m Mapping) error {
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// MapEach calls fn with the whole disk's mappings in order, adjacent
// ranges of the same kind merged (across grain tables, extents and chain
// layers), holding only one at a time. It stops at fn's first error.
func (d *Disk) MapEach(ctx context.Context, fn func(Mapping) error) error {
	var cur Mapping
	for off := int64(0); off < d.size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := d.BlockStatus(off, d.size-off)
		if err != nil {
			return err
		}
		switch {
		case off == 0:
			cur = m
		case cur.mergeable(m):
			cur.Length += m.Length
		default:
			if err := fn(cur); err != nil {
				return err
			}
			cur = m
		}
		off += m.Length
	}
	if d.size == 0 {
		return nil
	}
	return fn(cur)
}

func (a Mapping) mergeable(b Mapping) bool {
	if a.Data != b.Data || a.Zero != b.Zero || a.Allocated != b.Allocated || a.NoAccess != b.NoAccess ||
		a.Depth != b.Depth || a.File != b.File || a.Compressed != b.Compressed {
		return false
	}
	if a.HostOffset < 0 || b.HostOffset < 0 {
		return a.HostOffset == b.HostOffset
	}
	return a.HostOffset+a.Length == b.HostOffset
}

// chainLength counts this disk and its backing disks.
func (d *Disk) chainLength() int {
	n := 0
	for ; d != nil; d = d.parent {
		n++
	}
	return n
}
