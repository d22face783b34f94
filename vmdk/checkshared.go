package vmdk

// fileUse is what a disk's chain uses of one host file besides a sparse
// extent's own header, tables and grains. A descriptor may name one file
// in several extent lines (a sparse extent and a flat one after its
// grains, the same sparse file twice), and a parent may read a file of
// its child: bytes past one sparse extent's last grain may then be
// another extent's content, and Check's leak repair must not cut them.
type fileUse struct {
	sparse     map[*sparseExtent]bool
	flatEnd    int64 // bytes: where the furthest flat extent in the file ends
	descriptor bool  // the file is also a descriptor file
	checked    bool  // its leaks were reported once already
	doubt      bool  // a sparse extent in it is corrupt: leaks are not cut
}

// shared reports whether anything but one sparse extent uses the file.
func (u *fileUse) shared() bool { return len(u.sparse) > 1 || u.flatEnd > 0 || u.descriptor }

// fileUses maps every host file of d's chain to its uses.
func fileUses(d *Disk) map[fileID]*fileUse {
	uses := map[fileID]*fileUse{}
	use := func(s *source) *fileUse {
		if s == nil || s.f == nil {
			return nil
		}
		id, ok := statID(s.f)
		if !ok {
			return nil
		}
		if uses[id] == nil {
			uses[id] = &fileUse{sparse: map[*sparseExtent]bool{}}
		}
		return uses[id]
	}
	for ; d != nil; d = d.parent {
		if d.kind == KindDescriptor && len(d.sources) > 0 {
			if u := use(d.sources[0]); u != nil {
				u.descriptor = true
			}
		}
		for _, pe := range d.extents {
			u := use(pe.ext.file())
			if u == nil {
				continue
			}
			switch e := pe.ext.(type) {
			case *sparseExtent:
				u.sparse[e] = true
			case *flatExtent:
				u.flatEnd = max(u.flatEnd, e.base+pe.size)
			}
		}
	}
	return uses
}

// useOf is the use of e's file in uses, or a use by e alone when the file
// cannot be identified.
func (e *sparseExtent) useOf(uses map[fileID]*fileUse) *fileUse {
	if e.src.f != nil {
		if id, ok := statID(e.src.f); ok && uses[id] != nil {
			return uses[id]
		}
	}
	return &fileUse{sparse: map[*sparseExtent]bool{e: true}}
}
