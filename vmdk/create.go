package vmdk

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// Subformats (createType values) this package writes.
const (
	MonolithicSparse     = "monolithicSparse"
	MonolithicFlat       = "monolithicFlat"
	TwoGbMaxExtentSparse = "twoGbMaxExtentSparse"
	TwoGbMaxExtentFlat   = "twoGbMaxExtentFlat"
	StreamOptimized      = "streamOptimized"
)

// Adapter types the descriptor's ddb.adapterType may name.
var adapterTypes = []string{"ide", "lsilogic", "buslogic", "legacyESX", "pvscsi"}

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
}

func (o *ImageOptions) normalize() error {
	if o.Size <= 0 || o.Size > maxDiskSectors*SectorSize {
		return fmt.Errorf("vmdk: size %d is out of range", o.Size)
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
		return fmt.Errorf("%w: adapter type %q (want one of %s)", ErrUnsupported, o.AdapterType, strings.Join(adapterTypes, ", "))
	}
	if o.HWVersion == "" {
		o.HWVersion = defaultHWVersion
	}
	if o.ToolsVersion == "" {
		o.ToolsVersion = defaultToolsVersion
	}
	if o.GrainSize == 0 {
		o.GrainSize = defaultGrainSectors * SectorSize
	}
	if g := o.GrainSize / SectorSize; o.GrainSize%SectorSize != 0 || g <= 8 || g > maxGrainSectors || g&(g-1) != 0 {
		return fmt.Errorf("vmdk: grain size %d bytes: want a power of two from 8 KiB to 1 GiB", o.GrainSize)
	}
	return nil
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
func newDescriptor(o *ImageOptions, createType string, extents []ExtentLine) *Descriptor {
	c, h, s := geometry(o.Size, o.AdapterType)
	var id [16]byte
	rand.Read(id[:])
	return &Descriptor{
		Version: 1, Encoding: "UTF-8", CID: newCID(), ParentCID: NoParentCID,
		CreateType: createType, Extents: extents,
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
}
