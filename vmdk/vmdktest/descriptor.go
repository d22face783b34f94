package vmdktest

import (
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
)

// SectorSize is the unit of every size and offset in a VMDK.
const SectorSize = 512

// GrainSize is seSparse's grain (8 sectors), the unit a [Grain] covers.
const GrainSize = 4096

// NoParentCID is the parentCID of a disk without a parent.
const NoParentCID = 0xffffffff

// descriptor is what the writers put in a descriptor file.
type descriptor struct {
	version         int
	cid             uint32
	parentCID       uint32
	createType      string
	parentHint      string
	changeTrackPath string
	sectors         int64
	extentType      string
	extentFile      string
	ddb             [][2]string
}

// format renders d as ESXi writes descriptors: header, extent section and
// disk database, in that order.
func (d descriptor) format() string {
	var b strings.Builder
	b.WriteString("# Disk DescriptorFile\n")
	fmt.Fprintf(&b, "version=%d\nencoding=\"UTF-8\"\nCID=%08x\nparentCID=%08x\n", d.version, d.cid, d.parentCID)
	fmt.Fprintf(&b, "createType=%q\n", d.createType)
	if d.parentHint != "" {
		fmt.Fprintf(&b, "parentFileNameHint=%q\n", d.parentHint)
	}
	if d.changeTrackPath != "" {
		fmt.Fprintf(&b, "changeTrackPath=%q\n", d.changeTrackPath)
	}
	b.WriteString("\n# Extent description\n")
	fmt.Fprintf(&b, "RW %d %s %q\n", d.sectors, d.extentType, d.extentFile)
	b.WriteString("\n# The Disk Data Base\n#DDB\n\n")
	for _, kv := range d.ddb {
		fmt.Fprintf(&b, "ddb.%s = %q\n", kv[0], kv[1])
	}
	return b.String()
}

// write writes the descriptor as dir/name.vmdk.
func (d descriptor) write(dir, name string) error {
	return os.WriteFile(filepath.Join(dir, name+".vmdk"), []byte(d.format()), 0o644)
}

// cidFor is the CID of a disk: the caller's, or one derived from the
// disk's name so that generated chains are deterministic.
func cidFor(cid uint32, name string) uint32 {
	if cid != 0 {
		return cid
	}
	c := crc32.ChecksumIEEE([]byte("vmdktest/" + name))
	if c == 0 || c == NoParentCID {
		c = 0x1234abcd // neither "unset" nor "no parent"
	}
	return c
}

// longContentID is the 128-bit ID ESXi keeps beside the CID (its last 8
// hex digits are the CID).
func longContentID(name string, cid uint32) string {
	return fmt.Sprintf("%08x%08x%08x%08x", crc32.ChecksumIEEE([]byte("a"+name)), crc32.ChecksumIEEE([]byte("b"+name)), crc32.ChecksumIEEE([]byte("c"+name)), cid)
}

// uuidFor is a deterministic ddb.uuid in VMware's spelling.
func uuidFor(name string) string {
	sum := crc32.ChecksumIEEE([]byte("uuid/" + name))
	var parts []string
	for i := 0; i < 16; i++ {
		parts = append(parts, fmt.Sprintf("%02x", byte(sum>>(8*(i%4)))^byte(i*37)))
	}
	return strings.Join(parts[:8], " ") + "-" + strings.Join(parts[8:], " ")
}

// checkName refuses names that would leave dir or break a descriptor line.
func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\\\"\n\r\x00") || name == "." || name == ".." {
		return fmt.Errorf("vmdktest: disk name %q: must be a plain file name without quotes", name)
	}
	return nil
}

// checkCapacity refuses capacities a descriptor cannot state.
func checkCapacity(what string, capacity int64) error {
	if capacity <= 0 || capacity%SectorSize != 0 {
		return fmt.Errorf("vmdktest: %s capacity %d: must be a positive multiple of %d bytes", what, capacity, SectorSize)
	}
	return nil
}
