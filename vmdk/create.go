package vmdk

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Subformat is a descriptor's createType: how the disk is laid out in
// files.
type Subformat string

// Subformats this package writes.
const (
	MonolithicSparse     Subformat = "monolithicSparse"
	MonolithicFlat       Subformat = "monolithicFlat"
	TwoGbMaxExtentSparse Subformat = "twoGbMaxExtentSparse"
	TwoGbMaxExtentFlat   Subformat = "twoGbMaxExtentFlat"
	StreamOptimized      Subformat = "streamOptimized"
)

// Adapter types the descriptor's ddb.adapterType may name.
var adapterTypes = []string{"ide", "lsilogic", "buslogic", "legacyESX", "pvscsi"}

// AdapterTypes returns the ddb.adapterType values Create and
// NewStreamWriter accept (a fresh slice: callers may keep or change it).
func AdapterTypes() []string { return append([]string(nil), adapterTypes...) }

const (
	defaultGrainSectors = 128 // 64 KiB
	defaultHWVersion    = "4"
	defaultToolsVersion = "2147483647"
	descriptorSectors   = 20 // embedded descriptor space, as VMware and qemu-img reserve
)

// ImageOptions describes an image to create.
type ImageOptions struct {
	// Size is the virtual size in bytes, rounded up to a sector.
	Size int64
	// AdapterType is ddb.adapterType: ide (default), lsilogic, buslogic,
	// legacyESX or pvscsi.
	AdapterType string
	// HWVersion and ToolsVersion go to ddb.virtualHWVersion and
	// ddb.toolsVersion (defaults "4" and "2147483647").
	HWVersion, ToolsVersion string
	// GrainSize in bytes for sparse extents: a power of two from 8 KiB to
	// 1 GiB (default 64 KiB).
	GrainSize int64
	// DDB are entries of the caller's own for the descriptor's Disk Data
	// Base (where the disk was made from, say), written after the ones
	// this package writes, in order. Each key is "ddb." and at most 60
	// letters, digits, '.', '_' or '-', none of the package's own keys and
	// none twice; each value at most 512 bytes, without a line break or
	// NUL (which could not be read back as written). At most 16 entries.
	DDB []KeyValue
}

// Bounds of ImageOptions.DDB: the embedded descriptor keeps some room.
const (
	maxExtraDDB      = 16
	maxDDBKeyBytes   = 64
	maxDDBValueBytes = 512
)

// ownDDBKeys are the DDB keys newDescriptor writes.
var ownDDBKeys = []string{"ddb.virtualHWVersion", "ddb.geometry.cylinders", "ddb.geometry.heads", "ddb.geometry.sectors", "ddb.adapterType", "ddb.toolsVersion", "ddb.longContentID"}

// checkDDB checks the caller's DDB entries: each must read back from the
// descriptor as it was given, and none may shadow another.
func checkDDB(entries []KeyValue) error {
	if len(entries) > maxExtraDDB {
		return fmt.Errorf("%w: %d DDB entries: at most %d", ErrInvalidOptions, len(entries), maxExtraDDB)
	}
	seen := map[string]bool{}
	for _, k := range ownDDBKeys {
		seen[strings.ToLower(k)] = true
	}
	for _, kv := range entries {
		name, ok := strings.CutPrefix(kv.Key, "ddb.")
		if !ok || name == "" || len(kv.Key) > maxDDBKeyBytes || strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			return fmt.Errorf("%w: DDB key %q: want ddb. and at most %d letters, digits, '.', '_' or '-'", ErrInvalidOptions, truncate(kv.Key), maxDDBKeyBytes-4)
		}
		if seen[strings.ToLower(kv.Key)] {
			return fmt.Errorf("%w: DDB key %q is given twice or is one this package writes", ErrInvalidOptions, kv.Key)
		}
		seen[strings.ToLower(kv.Key)] = true
		if len(kv.Value) > maxDDBValueBytes || strings.ContainsAny(kv.Value, "\r\n\x00") {
			return fmt.Errorf("%w: DDB %s: a value of at most %d bytes without line breaks or NUL", ErrInvalidOptions, kv.Key, maxDDBValueBytes)
		}
	}
	return nil
}

func (o *ImageOptions) normalize() error {
	if o.Size <= 0 || o.Size > maxDiskSectors*SectorSize {
		return fmt.Errorf("%w: size %d is out of range", ErrInvalidOptions, o.Size)
	}
	o.Size = (o.Size + SectorSize - 1) / SectorSize * SectorSize
	if o.AdapterType == "" {
		o.AdapterType = "ide"
	}
	known := false
	for _, a := range adapterTypes {
		if strings.EqualFold(a, o.AdapterType) {
			o.AdapterType, known = a, true
		}
	}
	if !known {
		return fmt.Errorf("%w: %w: adapter type %q (want one of %s)", ErrInvalidOptions, ErrUnsupported, o.AdapterType, strings.Join(adapterTypes, ", "))
	}
	if o.HWVersion == "" {
		o.HWVersion = defaultHWVersion
	}
	if o.ToolsVersion == "" {
		o.ToolsVersion = defaultToolsVersion
	}
	for name, v := range map[string]string{"hardware version": o.HWVersion, "tools version": o.ToolsVersion} {
		if strings.Trim(v, "0123456789") != "" || len(v) > 10 {
			return fmt.Errorf("%w: %s %q: want a number", ErrInvalidOptions, name, v)
		}
	}
	if o.GrainSize == 0 {
		o.GrainSize = defaultGrainSectors * SectorSize
	}
	if g := o.GrainSize / SectorSize; o.GrainSize%SectorSize != 0 || g <= 8 || g > maxGrainSectors || g&(g-1) != 0 {
		return fmt.Errorf("%w: grain size %d bytes: want a power of two from 8 KiB to 1 GiB", ErrInvalidOptions, o.GrainSize)
	}
	return checkDDB(o.DDB)
}

// newCID returns a random content ID (never the "no parent" value).
func newCID() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		if cid := binary.LittleEndian.Uint32(b[:]); cid != NoParentCID {
			return cid
		}
	}
}

// geometry is the legacy CHS geometry VMware records: 16 heads for IDE,
// 255 otherwise, 63 sectors per track, cylinders capped at 16383 for IDE.
func geometry(size int64, adapter string) (cylinders, heads, sectors int64) {
	heads, sectors = 255, 63
	if adapter == "ide" {
		heads = 16
	}
	cylinders = size / (heads * sectors * SectorSize)
	if adapter == "ide" {
		cylinders = min(cylinders, 16383)
	}
	return cylinders, heads, sectors
}

// newDescriptor builds the descriptor of a new image with a fresh CID.
func newDescriptor(o *ImageOptions, createType Subformat, extents []ExtentLine) *Descriptor {
	c, h, s := geometry(o.Size, o.AdapterType)
	var id [16]byte
	rand.Read(id[:])
	d := &Descriptor{
		Version: 1, Encoding: "UTF-8", CID: newCID(), ParentCID: NoParentCID,
		CreateType: string(createType), Extents: extents,
		DDB: []KeyValue{
			{"ddb.virtualHWVersion", o.HWVersion},
			{"ddb.geometry.cylinders", fmt.Sprint(c)},
			{"ddb.geometry.heads", fmt.Sprint(h)},
			{"ddb.geometry.sectors", fmt.Sprint(s)},
			{"ddb.adapterType", o.AdapterType},
			{"ddb.toolsVersion", o.ToolsVersion},
			{"ddb.longContentID", hex.EncodeToString(id[:])},
		},
	}
	d.DDB = append(d.DDB, o.DDB...)
	return d
}

// CreateOptions describes a new image for Create.
type CreateOptions struct {
	ImageOptions
	// Subformat is the createType: MonolithicSparse (default),
	// MonolithicFlat, TwoGbMaxExtentSparse, TwoGbMaxExtentFlat or
	// StreamOptimized.
	Subformat Subformat
	// ZeroedGrains enables zeroed-grain table entries (sparse only):
	// whole-grain zero writes then store no data and hide the parent.
	ZeroedGrains bool
	// Backing is the path of the parent image (sparse subformats only). The
	// child records the parent's CID and a parentFileNameHint relative to
	// the child's directory; Size defaults to the parent's.
	Backing string
	// BackingOptions opens the parent (path checks, chain depth).
	BackingOptions Options
}

// maxSplitSectors is the largest extent of the twoGbMaxExtent* subformats.
const maxSplitSectors = 0x80000000 / SectorSize

// Size limits of the subformats, in bytes (see MaxSize).
const (
	// maxSplitSparseExtents is the most extents (NAME-s001.vmdk to
	// NAME-s999.vmdk) Create writes for twoGbMaxExtentSparse.
	maxSplitSparseExtents = 999
	// maxVMwareDiskBytes is VMware's largest virtual disk, 62 TiB.
	maxVMwareDiskBytes = 62 << 40
	// maxExt4FileBytes is the largest file ext4 with 4 KiB blocks holds:
	// logical block numbers are 32 bits and the kernel keeps the last one
	// free (ext4_max_size), so (2^32 - 1) * 4 KiB = 16 TiB - 4 KiB.
	// Truncating a file past it fails with EFBIG ("File too large").
	maxExt4FileBytes = (1<<32 - 1) * 4096
)

// MaxSize is the largest virtual size in bytes Create accepts for a
// subformat (createType) with the default 64 KiB grain, or 0 for a
// subformat it does not write. Sizes are rounded up to a multiple of 512
// bytes before the check, and every limit is such a multiple.
//
//   - monolithicSparse, streamOptimized: one hosted sparse extent whose
//     grain directory and tables hold 32-bit sector offsets, so the whole
//     extent (header, descriptor, both copies of the grain directory and
//     tables, then every grain) must stay below 2^32 sectors (2 TiB):
//     2198754230272 bytes, 2 TiB less 256.56 MiB of metadata. A stream's
//     grains are compressed, but incompressible content needs as much room.
//   - twoGbMaxExtentSparse: at most 999 extents of 2 GiB, 1998 GiB.
//   - twoGbMaxExtentFlat: VMware's largest virtual disk, 62 TiB.
//   - monolithicFlat: one flat file, as large as the filesystem holding it
//     allows; the bound is ext4's with 4 KiB blocks, the common default for
//     PVCs, 16 TiB less 4 KiB (XFS allows far more).
func MaxSize(createType Subformat) int64 {
	return maxSize(createType, defaultGrainSectors*SectorSize)
}

// maxSize is MaxSize for a grain size in bytes (sparse subformats depend
// on it).
func maxSize(createType Subformat, grainBytes int64) int64 {
	switch createType {
	case MonolithicSparse, StreamOptimized:
		// The largest capacity whose full extent fits: the extent grows
		// with the capacity, so search it.
		grain := grainBytes / SectorSize
		lo, hi := int64(0), int64(math.MaxUint32)
		for lo < hi {
			mid := lo + (hi-lo+1)/2
			if sparseExtentSectors(mid, grain, descriptorSectors) <= math.MaxUint32 {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		return lo * SectorSize
	case TwoGbMaxExtentSparse:
		return min(maxSplitSparseExtents*maxSplitSectors*SectorSize, maxVMwareDiskBytes)
	case TwoGbMaxExtentFlat:
		return min(maxExtents*maxSplitSectors*SectorSize, maxVMwareDiskBytes)
	case MonolithicFlat:
		return maxExt4FileBytes
	}
	return 0
}

// sizeLimitReason says why a subformat's size is limited, for errors.
func sizeLimitReason(createType Subformat) string {
	switch createType {
	case MonolithicSparse, StreamOptimized:
		return "a single sparse extent addresses at most 2^32 sectors (2 TiB) including its grain tables; use twoGbMaxExtentFlat or monolithicFlat"
	case TwoGbMaxExtentSparse:
		return fmt.Sprintf("it is at most %d extents of 2 GiB; use twoGbMaxExtentFlat or monolithicFlat", maxSplitSparseExtents)
	case TwoGbMaxExtentFlat:
		return "VMware's largest virtual disk is 62 TiB"
	case MonolithicFlat:
		return "a single flat file, and ext4 (4 KiB blocks) holds files of at most 16 TiB - 4 KiB; use twoGbMaxExtentFlat"
	}
	return ""
}

// Create writes a new, empty image at path. Extent files are named after
// path: NAME-flat.vmdk (monolithicFlat), NAME-s001.vmdk.. and
// NAME-f001.vmdk.. (twoGbMaxExtent*). Existing files are not overwritten.
// The image is durable once Create returns: its files are synced, then
// their directory, without which a power cut could lose the new names.
func Create(path string, o CreateOptions) error {
	if err := create(path, o); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("create %s: sync directory: %w", path, err)
	}
	return nil
}

func create(path string, o CreateOptions) error {
	if o.Subformat == "" {
		o.Subformat = MonolithicSparse
	}
	flat := o.Subformat == MonolithicFlat || o.Subformat == TwoGbMaxExtentFlat
	switch {
	case o.Subformat != MonolithicSparse && o.Subformat != TwoGbMaxExtentSparse && o.Subformat != StreamOptimized && !flat:
		return fmt.Errorf("%w: %w: subformat %q (want %s, %s, %s, %s or %s)", ErrInvalidOptions, ErrUnsupported, o.Subformat,
			MonolithicSparse, MonolithicFlat, TwoGbMaxExtentSparse, TwoGbMaxExtentFlat, StreamOptimized)
	case flat && o.Backing != "":
		return fmt.Errorf("%w: %w: a %s image cannot have a backing file: flat extents have no unallocated grains to fall through", ErrInvalidOptions, ErrUnsupported, o.Subformat)
	case flat && o.ZeroedGrains:
		return fmt.Errorf("%w: %w: zeroed grains need sparse extents, not %s", ErrInvalidOptions, ErrUnsupported, o.Subformat)
	case o.Subformat == StreamOptimized && (o.Backing != "" || o.ZeroedGrains):
		return fmt.Errorf("%w: %w: streamOptimized images take no backing file or zeroed grains", ErrInvalidOptions, ErrUnsupported)
	}
	var parentCID uint32 = NoParentCID
	var hint string
	if o.Backing != "" {
		parent, err := Open(o.Backing, o.BackingOptions)
		if err != nil {
			return fmt.Errorf("backing file: %w", err)
		}
		parentCID = parent.CID()
		if o.Size == 0 {
			o.Size = parent.Size()
		}
		parent.Close()
		absParent, err1 := filepath.Abs(o.Backing)
		absDir, err2 := filepath.Abs(filepath.Dir(path))
		if err1 != nil || err2 != nil {
			return fmt.Errorf("backing file %s: cannot make a relative path: %w", o.Backing, errors.Join(err1, err2))
		}
		if hint, err = filepath.Rel(absDir, absParent); err != nil {
			return fmt.Errorf("backing file %s: %w", o.Backing, err)
		}
	}
	if err := o.normalize(); err != nil {
		return err
	}
	if limit := maxSize(o.Subformat, o.GrainSize); o.Size > limit {
		return fmt.Errorf("%w: %w: a %s image of %d bytes: at most %d (%s)", ErrInvalidOptions, ErrUnsupported, o.Subformat, o.Size, limit, sizeLimitReason(o.Subformat))
	}
	if o.Subformat == StreamOptimized {
		return createFile(path, func(f hostFile) error {
			w, err := NewStreamWriter(f, StreamOptions{ImageOptions: o.ImageOptions, ExtentFileName: filepath.Base(path)})
			if err != nil {
				return err
			}
			return w.Close()
		})
	}

	// Lay out the extents: one, or one per 2 GiB for the split subformats.
	sectors := o.Size / SectorSize
	base := strings.TrimSuffix(filepath.Base(path), ".vmdk")
	var lines []ExtentLine
	for i, left := 1, sectors; left > 0 || i == 1; i++ {
		n := left
		var name string
		switch o.Subformat {
		case MonolithicSparse:
			name = filepath.Base(path)
		case MonolithicFlat:
			name = base + "-flat.vmdk"
		case TwoGbMaxExtentSparse:
			n, name = min(left, maxSplitSectors), fmt.Sprintf("%s-s%03d.vmdk", base, i)
		case TwoGbMaxExtentFlat:
			n, name = min(left, maxSplitSectors), fmt.Sprintf("%s-f%03d.vmdk", base, i)
		}
		typ := ExtentSparse
		if flat {
			typ = ExtentFlat
		}
		lines = append(lines, ExtentLine{Access: AccessRW, Sectors: n, Type: typ, File: name})
		left -= n
	}
	if len(lines) > maxSplitSparseExtents && !flat || len(lines) > maxExtents {
		return fmt.Errorf("%w: %d extents", ErrUnsupported, len(lines))
	}
	desc := newDescriptor(&o.ImageOptions, o.Subformat, lines)
	desc.ParentCID, desc.ParentFileNameHint = parentCID, hint

	dir := filepath.Dir(path)
	if o.Subformat == MonolithicSparse {
		return createFile(path, func(f hostFile) error {
			return writeSparseExtent(f, sectors, &o, desc.Format())
		})
	}
	var created []string
	for _, l := range lines {
		p := filepath.Join(dir, l.File)
		err := createFile(p, func(f hostFile) error {
			if flat {
				return f.Truncate(l.Sectors * SectorSize)
			}
			return writeSparseExtent(f, l.Sectors, &o, nil)
		})
		if err != nil {
			for _, c := range created {
				host.Remove(c)
			}
			return err
		}
		created = append(created, p)
	}
	err := createFile(path, func(f hostFile) error {
		_, err := f.Write(desc.Format())
		return err
	})
	if err != nil {
		for _, c := range created {
			host.Remove(c)
		}
	}
	return err
}

// createFile creates path exclusively, fills it, syncs it and removes it
// again if anything failed.
func createFile(path string, fill func(hostFile) error) error {
	f, err := host.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		host.Remove(path)
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// sparseLayout places the metadata of a hosted sparse extent with h's
// capacity and grain size after its header and descSectors of embedded
// descriptor: redundant GD and GTs, GD and GTs, padded to a grain. It sets
// h's RGDOffset, GDOffset and OverHead.
func sparseLayout(h *SparseHeader, descSectors int64) (gdEntries, gdSectors, gtSectors int64) {
	grain := int64(h.GrainSize)
	next := 1 + descSectors
	gdEntries = int64(h.gdEntries())
	gdSectors = (gdEntries*4 + SectorSize - 1) / SectorSize
	gtSectors = int64(h.NumGTEsPerGT) * 4 / SectorSize
	h.RGDOffset = uint64(next)
	h.GDOffset = uint64(next + gdSectors + gdEntries*gtSectors)
	end := int64(h.GDOffset) + gdSectors + gdEntries*gtSectors
	h.OverHead = uint64((end + grain - 1) / grain * grain)
	return gdEntries, gdSectors, gtSectors
}

// sparseExtentSectors is the size in sectors of a hosted sparse extent of
// sectors capacity in writeSparseExtent's layout once every grain is
// allocated: its grain-table entries must address all of it in 32 bits.
func sparseExtentSectors(sectors, grain, descSectors int64) int64 {
	h := SparseHeader{Capacity: uint64(sectors), GrainSize: uint64(grain), NumGTEsPerGT: maxGTEsPerGT}
	sparseLayout(&h, descSectors)
	return int64(h.OverHead) + (sectors+grain-1)/grain*grain
}

// writeSparseExtent writes an empty hosted sparse extent in qemu-img's
// layout: header, embedded descriptor (if any, 20 sectors), redundant GD
// and GTs, GD and GTs, padded to a grain. Every grain table is
// preallocated so writes only append grains.
func writeSparseExtent(f hostFile, sectors int64, o *CreateOptions, desc []byte) error {
	grain := o.GrainSize / SectorSize
	h := SparseHeader{
		Version: 1, Flags: flagNewlineCheck | flagRedundantGT,
		Capacity: uint64(sectors), GrainSize: uint64(grain), NumGTEsPerGT: maxGTEsPerGT,
	}
	if o.ZeroedGrains {
		h.Version, h.Flags = 2, h.Flags|flagZeroedGTE
	}
	var descSectors int64
	if desc != nil {
		descSectors = max(descriptorSectors, (int64(len(desc))+SectorSize-1)/SectorSize)
		h.DescriptorOffset, h.DescriptorSize = 1, uint64(descSectors)
	}
	gdEntries, gdSectors, gtSectors := sparseLayout(&h, descSectors)
	if full := sparseExtentSectors(sectors, grain, descSectors); full > math.MaxUint32 {
		return fmt.Errorf("%w: a sparse extent of %d sectors would need offsets past 2^32 sectors (2 TiB); use twoGbMaxExtentFlat or monolithicFlat", ErrUnsupported, sectors)
	}

	// The grain tables start all zero: holes in the file, so creating a
	// large image writes (and buffers) only the directories.
	head := make([]byte, SectorSize, (1+len(desc)/SectorSize+1)*SectorSize)
	copy(head, h.marshal())
	head = append(head, desc...)
	if _, err := f.WriteAt(head, 0); err != nil {
		return err
	}
	entries := make([]uint32, gdEntries)
	for _, gd := range []int64{int64(h.RGDOffset), int64(h.GDOffset)} {
		for i := range entries {
			entries[i] = uint32(gd + gdSectors + int64(i)*gtSectors)
		}
		if _, err := f.WriteAt(appendEntries(nil, entries), gd*SectorSize); err != nil {
			return err
		}
	}
	return f.Truncate(int64(h.OverHead) * SectorSize)
}
