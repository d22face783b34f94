package vmdktest

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"slices"
)

// The seSparse on-disk constants (vmdk-format.md, section 4b).
const (
	seSparseConstMagic    = 0x00000000cafebabe
	seSparseVolatileMagic = 0x00000000cafecafe
	seSparseVersion       = 0x0000000200000001
	seGrainSectors        = GrainSize / SectorSize // 8
	seGTEntries           = 4096                   // entries of one grain table
	seGTSectors           = seGTEntries * 8 / SectorSize
	seTableSpan           = seGTEntries * GrainSize // bytes one grain table covers: 16 MiB
	seAreaAlign           = 2048                    // sectors: ESXi rounds every area to 1 MiB
	seGDAllocated         = 0x1000000000000000      // high 32 bits of a GD entry with a table
)

// Grain table entry types (the top nibble).
const (
	seGTEUnmapped  = 0x1000000000000000
	seGTEZero      = 0x2000000000000000
	seGTEAllocated = 0x3000000000000000
)

// SESparseOptions shapes a delta written by WriteSESparseDelta. The zero
// value is a clean delta laid out as ESXi lays one out.
type SESparseOptions struct {
	// CID is the delta's CID; 0 derives one from the name.
	CID uint32
	// Dirty sets the volatile header's replay_journal, as a snapshot that
	// was not closed cleanly has it: readers must refuse it.
	Dirty bool
	// Reserved1 is written to the const header's reserved1 (some real
	// images have 0x200 there; QEMU refuses anything but 0).
	Reserved1 uint64
	// FirstGrainIndex is where in the grains area the first grain written
	// goes (the rest follow in the order given). A non-zero value such as
	// 0x1001 makes stored indexes use both halves of the GT entry's split
	// index field, which grain 0 onwards only does past 4096 grains.
	FirstGrainIndex int64
}

// seLayout is where a delta's areas are, in sectors, as the const
// header says.
type seLayout struct {
	VolatileHeader, JournalHeader, Journal, GrainDirectory, GrainTables,
	FreeBitmap, Backmap, Grains [2]int64 // offset, size
}

// seSparseLayout sizes the areas of a delta of capacity bytes as ESXi does
// (a 100 MiB delta: volatile 1/1, journal header 2/2, journal 2048/2048,
// GD 4096/2048, GTs 6144/2048, free bitmap 8192/2048, backmap 10240/2048,
// grains 12288/204800), with room for first+all grains in the grains area.
func seSparseLayout(capacity, first int64) seLayout {
	grains := (capacity + GrainSize - 1) / GrainSize
	tables := (grains + seGTEntries - 1) / seGTEntries
	slots := first + grains // grains-area slots a delta may use
	up := func(sectors int64) int64 { return max(seAreaAlign, (sectors+seAreaAlign-1)/seAreaAlign*seAreaAlign) }
	var l seLayout
	l.VolatileHeader = [2]int64{1, 1}
	l.JournalHeader = [2]int64{2, 2}
	l.Journal = [2]int64{2048, 2048}
	at := int64(4096)
	next := func(size int64) [2]int64 { a := [2]int64{at, size}; at += size; return a }
	l.GrainDirectory = next(up((tables*8 + SectorSize - 1) / SectorSize))
	l.GrainTables = next(up(tables * seGTSectors))
	l.FreeBitmap = next(up((slots/8 + SectorSize - 1) / SectorSize))
	l.Backmap = next(up((slots*8 + SectorSize - 1) / SectorSize))
	l.Grains = next(up(slots * seGrainSectors))
	return l
}

// WriteSESparseDelta writes a seSparse snapshot delta of capacity bytes
// over the parent dir/parentHint (whose CID is parentCID):
// dir/<name>.vmdk, its descriptor (createType "seSparse"), and
// dir/<name>-sesparse.vmdk holding grains. Grains are stored in the order
// given; a grain index may appear once.
func WriteSESparseDelta(dir, name, parentHint string, parentCID uint32, capacity int64, grains []Grain, o SESparseOptions) (cid uint32, err error) {
	return WriteSESparseDeltaSeq(dir, name, parentHint, parentCID, capacity, slices.Values(grains), o)
}

// WriteSESparseDeltaSeq is WriteSESparseDelta with grains from an
// iterator, each written as it comes: memory is bounded by the grain
// tables the grains touch (32 KiB per 16 MiB of disk), not by their data.
func WriteSESparseDeltaSeq(dir, name, parentHint string, parentCID uint32, capacity int64, grains iter.Seq[Grain], o SESparseOptions) (cid uint32, err error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	if err := checkCapacity("seSparse delta", capacity); err != nil {
		return 0, err
	}
	if o.FirstGrainIndex < 0 || o.FirstGrainIndex > 1<<36 {
		// Past 2^36 grains the grains area would pass the 512 TiB any
		// reader bounds a size by.
		return 0, fmt.Errorf("vmdktest: FirstGrainIndex %d out of range [0, 2^36]", o.FirstGrainIndex)
	}
	extent := name + "-sesparse.vmdk"
	l := seSparseLayout(capacity, o.FirstGrainIndex)
	if err := writeSESparseExtent(filepath.Join(dir, extent), l, capacity, grains, o); err != nil {
		return 0, err
	}
	cid = cidFor(o.CID, name)
	d := descriptor{
		version: 1, cid: cid, parentCID: parentCID, createType: "seSparse", parentHint: parentHint,
		sectors: capacity / SectorSize, extentType: "SESPARSE", extentFile: extent,
		ddb: [][2]string{
			{"grain", "8"},
			{"longContentID", longContentID(name, cid)},
			{"thinProvisioned", "1"},
			{"uuid", uuidFor(name)},
		},
	}
	if err := d.write(dir, name); err != nil {
		return 0, err
	}
	return cid, nil
}

// seTables is the grain directory being built: the tables the grains
// touched, numbered in the order they were first touched (as ESXi
// allocates them), so GD entries do not simply count up.
type seTables struct {
	byGD  map[int64]uint32 // GD index -> table number
	data  [][]uint64       // by table number
	order []int64          // GD index of each table number
}

func (t *seTables) entry(g int64) *uint64 {
	gi := g / seGTEntries
	n, ok := t.byGD[gi]
	if !ok {
		n = uint32(len(t.data))
		t.byGD[gi] = n
		t.data = append(t.data, make([]uint64, seGTEntries))
		t.order = append(t.order, gi)
	}
	return &t.data[n][g%seGTEntries]
}

// seAllocatedGTE encodes a stored grain index as an allocated GT entry:
// its low 12 bits go to bits 48..59, the rest to bits 0..47.
func seAllocatedGTE(index int64) uint64 {
	i := uint64(index)
	return seGTEAllocated | (i&0xfff)<<48 | (i>>12)&0x0000ffffffffffff
}

func writeSESparseExtent(path string, l seLayout, capacity int64, grains iter.Seq[Grain], o SESparseOptions) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tables := seTables{byGD: map[int64]uint32{}}
	seen := map[int64]bool{}
	next := o.FirstGrainIndex // stored index of the next allocated grain
	grainsAt := l.Grains[0] * SectorSize
	w := bufio.NewWriterSize(&offsetWriter{f: f, off: grainsAt + next*GrainSize}, copyChunk)
	pad := make([]byte, GrainSize)
	for g := range grains {
		if err := g.check(capacity); err != nil {
			return err
		}
		if seen[g.Index] {
			return fmt.Errorf("vmdktest: grain %d given twice", g.Index)
		}
		seen[g.Index] = true
		e := tables.entry(g.Index)
		switch g.Kind {
		case Zero:
			*e = seGTEZero
		case Unmapped:
			*e = seGTEUnmapped
		case Allocated:
			*e = seAllocatedGTE(next)
			next++
			if _, err := w.Write(g.Data); err != nil {
				return err
			}
			if _, err := w.Write(pad[:GrainSize-len(g.Data)]); err != nil {
				return err
			}
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	// The file ends after the last grain stored (ESXi grows it as grains
	// are allocated), or after the metadata when none is.
	if err := f.Truncate(grainsAt + next*GrainSize); err != nil {
		return err
	}
	if err := writeSESparseMetadata(f, l, capacity, &tables, o); err != nil {
		return err
	}
	return nil
}

func writeSESparseMetadata(f *os.File, l seLayout, capacity int64, t *seTables, o SESparseOptions) error {
	le := binary.LittleEndian
	h := make([]byte, SectorSize)
	fields := []uint64{
		seSparseConstMagic, seSparseVersion, uint64(capacity / SectorSize), seGrainSectors, seGTSectors,
		0, o.Reserved1, 0, 0, 0,
	}
	for _, a := range [][2]int64{l.VolatileHeader, l.JournalHeader, l.Journal, l.GrainDirectory, l.GrainTables, l.FreeBitmap, l.Backmap, l.Grains} {
		fields = append(fields, uint64(a[0]), uint64(a[1]))
	}
	for i, v := range fields {
		le.PutUint64(h[i*8:], v)
	}
	if _, err := f.WriteAt(h, 0); err != nil {
		return err
	}
	v := make([]byte, SectorSize)
	le.PutUint64(v[0:], seSparseVolatileMagic)
	le.PutUint64(v[8:], uint64(len(t.data))) // free_gt_number: the next table to use
	le.PutUint64(v[16:], 1)                  // next_txn_seq_number
	if o.Dirty {
		le.PutUint64(v[24:], 1) // replay_journal
	}
	if _, err := f.WriteAt(v, l.VolatileHeader[0]*SectorSize); err != nil {
		return err
	}
	// The GD is written up to its last table; the rest of its area stays
	// zero (no table: the parent's content).
	gdLen := int64(0)
	for _, gi := range t.order {
		gdLen = max(gdLen, gi+1)
	}
	gd := make([]byte, 8*gdLen)
	for n, gi := range t.order {
		le.PutUint64(gd[8*gi:], seGDAllocated|uint64(n))
	}
	if _, err := f.WriteAt(gd, l.GrainDirectory[0]*SectorSize); err != nil {
		return err
	}
	raw := make([]byte, seGTEntries*8)
	for n, gt := range t.data {
		for j, e := range gt {
			le.PutUint64(raw[8*j:], e)
		}
		if _, err := f.WriteAt(raw, l.GrainTables[0]*SectorSize+int64(n)*seGTSectors*SectorSize); err != nil {
			return err
		}
	}
	return nil
}

// offsetWriter writes sequentially from off.
type offsetWriter struct {
	f   *os.File
	off int64
}

func (w *offsetWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}
