package vmdk

import (
	"fmt"
	"hash/maphash"
	"io"
	"slices"
)

// A sequential reader cannot look at the end of its source first, so a
// stream cut short at a marker boundary looks like one that ended. Before
// StreamReader may report the end it must prove it: every grain directory
// the stream carries (in the header's preallocated area or after a GD
// marker) must list exactly the grains that were read, each at the sector
// it was read from, through grain tables the stream also delivered; a
// footer must be a copy of the header naming that directory; a stream
// without any directory must end with an end-of-stream marker.
//
// The proof keeps a digest per grain table rather than the tables
// themselves, so its memory grows with the tables the stream holds, not
// with their 2 KiB each: one sum over the grains read into each table, one
// over the entries of each table read. The digests are keyed with a seed
// chosen per reader, so a crafted stream cannot make two different sets of grains sum
// alike.
type streamProof struct {
	seed       maphash.Seed
	grainSecs  int64 // grain size in sectors
	gtEntries  int64
	gtSectors  int64 // sectors of one grain table
	gdEntries  int64
	gdSectors  int64 // sectors of the grain directory
	zeroedGTE  bool
	grains     map[int64]uint64 // table index -> sum over grains read into it
	tables     []tableSum       // grain tables read that list grains, ascending sector
	emptySum   uint64           // sum over the sectors of the empty grain tables read
	fullGTs    int64            // GT markers that list grains
	gd         []uint32         // the header's grain directory (nil: GD_AT_END)
	gdMarker   []uint32         // the grain directory after a GD marker
	gdMarkerAt int64            // the sector of that directory's first entry
	footer     bool             // a footer was read
	gtMarkers  int64            // GT markers read
}

type tableSum struct {
	sector int64
	sum    uint64
}

func newStreamProof(h *SparseHeader) *streamProof {
	p := &streamProof{
		seed:      maphash.MakeSeed(),
		grainSecs: int64(h.GrainSize),
		gtEntries: int64(h.NumGTEsPerGT),
		gdEntries: int64(h.gdEntries()),
		zeroedGTE: h.ZeroedGTE(),
		grains:    map[int64]uint64{},
	}
	p.gtSectors = (p.gtEntries*4 + SectorSize - 1) / SectorSize
	p.gdSectors = (p.gdEntries*4 + SectorSize - 1) / SectorSize
	return p
}

// entry is the digest of "entry j of a grain table points at sector".
func (p *streamProof) entry(j, sector int64) uint64 {
	return maphash.Comparable(p.seed, [2]int64{j, sector})
}

// grain records a grain read at lba from the marker at sector.
func (p *streamProof) grain(lba, sector int64) {
	g := lba / p.grainSecs
	p.grains[g/p.gtEntries] += p.entry(g%p.gtEntries, sector)
}

// table records the grain table whose entries start at sector. Empty
// tables (a writer may write one for every table) are only summed, so
// that however many there are they cost no memory.
func (p *streamProof) table(sector int64, gt []uint32) {
	var sum uint64
	for j, v := range gt {
		if v == 0 || (v == 1 && p.zeroedGTE) {
			continue // no grain: a hole or a zeroed grain, neither in the stream
		}
		sum += p.entry(int64(j), int64(v))
	}
	if sum == 0 {
		p.emptySum += p.entry(-1, sector)
		return
	}
	i, found := slices.BinarySearchFunc(p.tables, sector, compareSector)
	if !found {
		p.tables = slices.Insert(p.tables, i, tableSum{sector, sum})
	}
}

func compareSector(t tableSum, sector int64) int { return cmpInt(t.sector, sector) }

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// gtMarker accounts for one more GT marker of sectors sectors: a stream has
// at most one table per directory entry, each exactly a table long, so
// markers repeating without end are refused once past that.
func (p *streamProof) gtMarker(sectors uint64, at int64) error {
	if int64(sectors) != p.gtSectors {
		return fmt.Errorf("%w: stream: grain table marker at byte %d claims %d sectors, a grain table is %d", ErrCorrupt, at, sectors, p.gtSectors)
	}
	if p.gtMarkers++; p.gtMarkers > p.gdEntries {
		return fmt.Errorf("%w: stream: grain table marker at byte %d is one more than the %d grain tables the capacity has room for", ErrCorrupt, at, p.gdEntries)
	}
	return nil
}

// markerTable records a table read after a GT marker. Such a table
// follows its grains, so one that lists grains when fewer tables have had
// grains is refused: the tables kept stay as few as the tables of grains.
func (p *streamProof) markerTable(sector int64, gt []uint32, at int64) error {
	n := len(p.tables)
	p.table(sector, gt)
	if len(p.tables) > n {
		if p.fullGTs++; p.fullGTs > int64(len(p.grains)) {
			return fmt.Errorf("%w: stream: grain table marker at byte %d lists grains of a table the stream has delivered no grains for", ErrCorrupt, at)
		}
	}
	return nil
}

// gdMarkerSectors checks a GD marker's size: one directory, as long as the
// capacity needs (a writer may round it up to 4 KiB).
func (p *streamProof) gdMarkerSectors(sectors uint64, at int64) error {
	if p.gdMarker != nil || p.footer {
		return fmt.Errorf("%w: stream: a second grain directory marker at byte %d", ErrCorrupt, at)
	}
	if int64(sectors) < p.gdSectors || int64(sectors) > p.gdSectors+8 {
		return fmt.Errorf("%w: stream: grain directory marker at byte %d claims %d sectors, the directory is %d", ErrCorrupt, at, sectors, p.gdSectors)
	}
	return nil
}

// checkFooter compares the footer with the header it copies and the
// directory read after the GD marker, which it must name.
func (p *streamProof) checkFooter(h, f *SparseHeader, at int64) error {
	if p.footer {
		return fmt.Errorf("%w: stream: a second footer at byte %d", ErrCorrupt, at)
	}
	p.footer = true
	// The random-access reader uses the footer in the header's place: it
	// must agree on everything that decides what a grain reads as.
	const readFlags = flagZeroedGTE | flagCompressed | flagMarkers
	if f.Capacity != h.Capacity || f.GrainSize != h.GrainSize || f.NumGTEsPerGT != h.NumGTEsPerGT || f.Flags&readFlags != h.Flags&readFlags {
		return fmt.Errorf("%w: stream: the footer at byte %d (capacity %d, grain %d, %d entries a table, flags %#x) is not a copy of the header (capacity %d, grain %d, %d, flags %#x)",
			ErrCorrupt, at, f.Capacity, f.GrainSize, f.NumGTEsPerGT, f.Flags, h.Capacity, h.GrainSize, h.NumGTEsPerGT, h.Flags)
	}
	if p.gdMarker == nil || int64(f.GDOffset) != p.gdMarkerAt {
		return fmt.Errorf("%w: stream: the footer at byte %d names a grain directory at sector %d, but the stream's is at %d", ErrCorrupt, at, f.GDOffset, p.gdMarkerAt)
	}
	return nil
}

// finish is the proof at the stream's end; eos: an end-of-stream marker
// was read.
func (p *streamProof) finish(eos bool) error {
	if p.gd == nil && p.gdMarker == nil && !eos {
		return fmt.Errorf("%w: stream: ends without an end-of-stream marker or a grain directory: truncated", ErrCorrupt)
	}
	for _, gd := range [][]uint32{p.gd, p.gdMarker} {
		if err := p.checkGD(gd); err != nil {
			return err
		}
	}
	return nil
}

// checkGD verifies that directory gd and the tables it names list exactly
// the grains read, and that the empty tables it names are the empty
// tables read.
func (p *streamProof) checkGD(gd []uint32) error {
	if gd == nil {
		return nil
	}
	var empty []uint32 // the sectors gd names for tables without grains
	for i, v := range gd {
		sum, has := p.grains[int64(i)]
		if v == 0 {
			if has {
				return fmt.Errorf("%w: stream: grains of grain table %d were read but the grain directory has no table for them", ErrCorrupt, i)
			}
			continue
		}
		k, found := slices.BinarySearchFunc(p.tables, int64(v), compareSector)
		switch {
		case found && p.tables[k].sum == sum:
		case found || has:
			return fmt.Errorf("%w: stream: grain table %d (sector %d) does not list the grains the stream delivered: the stream is truncated or damaged", ErrCorrupt, i, v)
		default:
			empty = append(empty, v)
		}
	}
	// Several entries may share one empty table (a writer's economy).
	var sum uint64
	for _, v := range slices.Compact(slices.Sorted(slices.Values(empty))) {
		sum += p.entry(-1, int64(v))
	}
	if sum != p.emptySum {
		return fmt.Errorf("%w: stream: the grain directory's empty grain tables are not the empty tables the stream holds: a table is missing (truncated) or misplaced", ErrCorrupt)
	}
	return nil
}

// maxStreamPadding bounds the zero bytes accepted after an end-of-stream
// marker: qemu pads its streams with zero sectors after the last grain
// (its "end" is a zero sector), and a source of fixed size may pad too.
// Zeros carry no grain, so accepting them loses nothing; anything else
// there could be grains a random-access reader would find (it scans past
// zero sectors), so it is refused rather than dropped; and an endless run of
// zeros is not the end of anything.
func (s *StreamReader) maxStreamPadding() int64 { return max(s.grainBytes, 1<<20) }

// drainPadding reads what follows an end-of-stream marker: zeros, at most
// maxStreamPadding of them, up to the end of the source.
func (s *StreamReader) drainPadding(eosAt int64) error {
	limit := s.maxStreamPadding()
	buf := make([]byte, 32<<10)
	for read := int64(0); ; {
		n, err := s.r.Read(buf)
		if k := slices.IndexFunc(buf[:n], func(b byte) bool { return b != 0 }); k >= 0 {
			return fmt.Errorf("%w: stream: byte %d, after the end-of-stream marker at byte %d, is not zero padding", ErrCorrupt, s.pos+int64(k), eosAt)
		}
		s.pos += int64(n)
		if read += int64(n); read > limit {
			return fmt.Errorf("%w: stream: more than %d bytes of zeros follow the end-of-stream marker", ErrCorrupt, limit)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream: read after the end-of-stream marker at byte %d: %w", s.pos, err)
		}
	}
}

// readMetadata reads the metadata after marker m (at byte at): a grain
// table, the grain directory or the footer, each bounded by what the
// header's capacity needs and recorded for the proof.
func (s *StreamReader) readMetadata(m marker, at int64) error {
	p := s.proof
	data := at + SectorSize
	switch m.typ {
	case markerGT:
		if err := p.gtMarker(m.val, at); err != nil {
			return err
		}
		gt, err := s.readEntries(p.gtEntries, "grain table")
		if err != nil {
			return err
		}
		if err := p.markerTable(data/SectorSize, gt, at); err != nil {
			return err
		}
	case markerGD:
		if err := p.gdMarkerSectors(m.val, at); err != nil {
			return err
		}
		gd, err := s.readEntries(p.gdEntries, "grain directory")
		if err != nil {
			return err
		}
		p.gdMarker, p.gdMarkerAt = gd, data/SectorSize
	case markerFooter:
		if m.val != 1 {
			return fmt.Errorf("%w: stream: footer marker at byte %d claims %d sectors, a footer is 1", ErrCorrupt, at, m.val)
		}
		buf := make([]byte, SectorSize)
		if err := s.readFull(buf, "footer"); err != nil {
			return err
		}
		f, err := parseSparseHeader(buf)
		if err != nil {
			return fmt.Errorf("stream: footer at byte %d: %w", data, err)
		}
		if err := p.checkFooter(s.header, f, at); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: stream: unknown marker type %d at byte %d", ErrCorrupt, m.typ, at)
	}
	return s.skipTo(data + int64(m.val)*SectorSize)
}

// readEntries reads n little-endian u32 entries (a grain table or
// directory) from the stream, in pieces, so that memory follows the bytes
// that actually arrive rather than what a header claims.
func (s *StreamReader) readEntries(n int64, what string) ([]uint32, error) {
	var out []uint32
	buf := make([]byte, min(n*4, 1<<20))
	for left := n * 4; left > 0; {
		b := buf[:min(left, int64(len(buf)))]
		if err := s.readFull(b, what); err != nil {
			return nil, err
		}
		out = append(out, decodeEntries(b)...)
		left -= int64(len(b))
	}
	return out, nil
}

// readPrefixTables reads the grain directory a writer preallocated between
// the descriptor and the first grain (qemu, open-vmdk), and those of its
// grain tables that lie there too (qemu); the others follow their grains
// behind GT markers (open-vmdk).
func (s *StreamReader) readPrefixTables() error {
	h, p := s.header, s.proof
	gdAt, first := int64(h.GDOffset)*SectorSize, int64(h.OverHead)*SectorSize
	if gdAt < s.pos || gdAt+p.gdSectors*SectorSize > first {
		return fmt.Errorf("%w: stream: the grain directory at sector %d does not lie between the descriptor and the first grain (sector %d): reading it needs random access", ErrUnsupported, h.GDOffset, h.OverHead)
	}
	if err := s.skipTo(gdAt); err != nil {
		return err
	}
	gd, err := s.readEntries(p.gdEntries, "grain directory")
	if err != nil {
		return err
	}
	p.gd = gd
	sectors := slices.Compact(slices.Sorted(slices.Values(gd)))
	for _, v := range sectors {
		at := int64(v) * SectorSize
		switch {
		case v == 0:
			continue
		case at >= first:
			return nil // behind a GT marker, after its grains
		case at < s.pos:
			return fmt.Errorf("%w: stream: grain table at sector %d lies before the end of the grain directory (byte %d): reading it needs random access", ErrUnsupported, v, s.pos)
		case at+p.gtSectors*SectorSize > first:
			return fmt.Errorf("%w: stream: grain table at sector %d overlaps the first grain (sector %d)", ErrCorrupt, v, h.OverHead)
		}
		if err := s.skipTo(at); err != nil {
			return err
		}
		gt, err := s.readEntries(p.gtEntries, "grain table")
		if err != nil {
			return err
		}
		p.table(int64(v), gt)
	}
	return nil
}
