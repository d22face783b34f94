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

// COWD (vmfsSparse) layout constants: a 2048-byte header, the grain
// directory at sector 4, grain tables of 4096 u32 sector numbers.
const (
	cowdHeaderSectors = 4
	cowdGTEntries     = 4096
	cowdGTSectors     = cowdGTEntries * 4 / SectorSize
)

// VMFSSparseOptions shapes a delta written by WriteVMFSSparseDelta.
type VMFSSparseOptions struct {
	// CID is the delta's CID; 0 derives one from the name.
	CID uint32
	// GrainSectors is the COWD grain size: 1, 2, 4 or 8 sectors (8, one
	// Grain, if 0). Smaller grains store each Grain as several.
	GrainSectors int
}

// WriteVMFSSparseDelta writes a vmfsSparse (COWD) snapshot delta, as
// VMFS5 keeps snapshots of disks under 2 TB, over the parent
// dir/parentHint: dir/<name>.vmdk (createType "vmfsSparse") and
// dir/<name>-delta.vmdk. COWD has no zeroed grains: grains must be
// Allocated. capacity may not exceed 2 TiB (COWD's u32 sectors).
func WriteVMFSSparseDelta(dir, name, parentHint string, parentCID uint32, capacity int64, grains []Grain, o VMFSSparseOptions) (cid uint32, err error) {
	return WriteVMFSSparseDeltaSeq(dir, name, parentHint, parentCID, capacity, slices.Values(grains), o)
}

// WriteVMFSSparseDeltaSeq is WriteVMFSSparseDelta with grains from an
// iterator, each written as it comes (memory: the grain tables).
func WriteVMFSSparseDeltaSeq(dir, name, parentHint string, parentCID uint32, capacity int64, grains iter.Seq[Grain], o VMFSSparseOptions) (cid uint32, err error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	if err := checkCapacity("vmfsSparse delta", capacity); err != nil {
		return 0, err
	}
	if capacity/SectorSize > 0xffffffff {
		return 0, fmt.Errorf("vmdktest: vmfsSparse delta of %d bytes: COWD holds at most 2 TiB", capacity)
	}
	switch o.GrainSectors {
	case 0:
		o.GrainSectors = 8
	case 1, 2, 4, 8:
	default:
		return 0, fmt.Errorf("vmdktest: COWD grain of %d sectors: use 1, 2, 4 or 8", o.GrainSectors)
	}
	extent := name + "-delta.vmdk"
	if err := writeCOWDExtent(filepath.Join(dir, extent), capacity, grains, o.GrainSectors); err != nil {
		return 0, err
	}
	cid = cidFor(o.CID, name)
	d := descriptor{
		version: 1, cid: cid, parentCID: parentCID, createType: "vmfsSparse", parentHint: parentHint,
		sectors: capacity / SectorSize, extentType: "VMFSSPARSE", extentFile: extent,
		ddb: [][2]string{{"longContentID", longContentID(name, cid)}, {"uuid", uuidFor(name)}},
	}
	if err := d.write(dir, name); err != nil {
		return 0, err
	}
	return cid, nil
}

func writeCOWDExtent(path string, capacity int64, grains iter.Seq[Grain], grainSectors int) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	sectors := capacity / SectorSize
	gs := int64(grainSectors)
	gdEntries := (sectors + gs*cowdGTEntries - 1) / (gs * cowdGTEntries)
	gdSectors := (gdEntries*4 + SectorSize - 1) / SectorSize
	gtStart := cowdHeaderSectors + gdSectors
	// Every table is preallocated after the GD (as ESXi does); grains follow.
	gt := make([]uint32, gdEntries*cowdGTEntries)
	nextSector := gtStart + gdEntries*cowdGTSectors
	w := bufio.NewWriterSize(&offsetWriter{f: f, off: nextSector * SectorSize}, copyChunk)
	pad := make([]byte, GrainSize)
	seen := map[int64]bool{}
	per := GrainSize / SectorSize / gs // COWD grains per Grain
	for g := range grains {
		if err := g.check(capacity); err != nil {
			return err
		}
		if g.Kind != Allocated {
			return fmt.Errorf("vmdktest: grain %d is %s: COWD has no such grains (write zeros as Allocated)", g.Index, g.Kind)
		}
		if seen[g.Index] {
			return fmt.Errorf("vmdktest: grain %d given twice", g.Index)
		}
		seen[g.Index] = true
		for k := int64(0); k < per; k++ {
			c := g.Index*per + k // COWD grain number
			if c*gs >= sectors {
				break // past the capacity: the last Grain is partial
			}
			if nextSector > 0xffffffff-gs {
				return fmt.Errorf("vmdktest: COWD delta outgrew 2 TiB of sectors")
			}
			gt[c] = uint32(nextSector)
			nextSector += gs
		}
		// Only the COWD grains inside the capacity are stored.
		stored := min(per, (sectors-g.Index*per*gs+gs-1)/gs) * gs * SectorSize
		data := g.Data[:min(int64(len(g.Data)), stored)]
		if _, err := w.Write(data); err != nil {
			return err
		}
		if _, err := w.Write(pad[:stored-int64(len(data))]); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	le := binary.LittleEndian
	h := make([]byte, cowdHeaderSectors*SectorSize)
	copy(h, "COWD")
	for i, v := range []uint32{1, 3, uint32(sectors), uint32(gs), cowdHeaderSectors, uint32(gdEntries), uint32(nextSector)} {
		le.PutUint32(h[4+4*i:], v)
	}
	if _, err := f.WriteAt(h, 0); err != nil {
		return err
	}
	gd := make([]byte, gdSectors*SectorSize)
	for i := range gdEntries {
		le.PutUint32(gd[4*i:], uint32(gtStart+i*cowdGTSectors))
	}
	if _, err := f.WriteAt(gd, cowdHeaderSectors*SectorSize); err != nil {
		return err
	}
	raw := make([]byte, 4*len(gt))
	for i, v := range gt {
		le.PutUint32(raw[4*i:], v)
	}
	if _, err := f.WriteAt(raw, gtStart*SectorSize); err != nil {
		return err
	}
	return f.Truncate(nextSector * SectorSize)
}
