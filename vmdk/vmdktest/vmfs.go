package vmdktest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// VMFSOptions shapes a base disk written by WriteVMFSBase. The zero value
// is a thick, version=1 disk with a CID derived from its name.
type VMFSOptions struct {
	// Thin writes ddb.thinProvisioned = "1" and leaves holes in the flat
	// file where the content is zero, as a thin disk on VMFS is.
	Thin bool
	// Version is the descriptor version: 1 (the default) or 3, which ESXi
	// 8 writes with a changeTrackPath="<name>-ctk.vmdk" line. The ctk file
	// itself is not written: readers of the content ignore it.
	Version int
	// CID is the disk's CID; 0 derives one from the name.
	CID uint32
	// AdapterType is ddb.adapterType ("lsilogic" if empty).
	AdapterType string
}

// copyChunk is how much content the writers hold at once.
const copyChunk = 1 << 20

// WriteVMFSBase writes dir/<name>.vmdk, a descriptor as ESXi writes it for
// a disk on VMFS (createType "vmfs", one VMFS extent), and its extent
// dir/<name>-flat.vmdk holding size bytes of content (nil: all zeros).
// size must be a multiple of 512. Content is copied 1 MiB at a time.
func WriteVMFSBase(dir, name string, content io.ReaderAt, size int64, o VMFSOptions) (cid uint32, err error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	if err := checkCapacity("base disk", size); err != nil {
		return 0, err
	}
	switch o.Version {
	case 0:
		o.Version = 1
	case 1, 3:
	default:
		return 0, fmt.Errorf("vmdktest: descriptor version %d: ESXi writes 1 or 3", o.Version)
	}
	if o.AdapterType == "" {
		o.AdapterType = "lsilogic"
	}
	flat := name + "-flat.vmdk"
	if err := writeFlat(filepath.Join(dir, flat), content, size, o.Thin); err != nil {
		return 0, err
	}
	cid = cidFor(o.CID, name)
	d := descriptor{
		version: o.Version, cid: cid, parentCID: NoParentCID, createType: "vmfs",
		sectors: size / SectorSize, extentType: "VMFS", extentFile: flat,
	}
	if o.Version == 3 {
		d.changeTrackPath = name + "-ctk.vmdk"
	}
	const heads, sectors = 255, 63
	d.ddb = [][2]string{
		{"adapterType", o.AdapterType},
		{"geometry.cylinders", fmt.Sprint(min(size/(heads*sectors*SectorSize), 65535))},
		{"geometry.heads", fmt.Sprint(heads)},
		{"geometry.sectors", fmt.Sprint(sectors)},
		{"longContentID", longContentID(name, cid)},
	}
	if o.Thin {
		d.ddb = append(d.ddb, [2]string{"thinProvisioned", "1"})
	}
	d.ddb = append(d.ddb, [][2]string{
		{"toolsInstallType", "4"},
		{"toolsVersion", "12352"},
		{"uuid", uuidFor(name)},
		{"virtualHWVersion", "19"},
	}...)
	if err := d.write(dir, name); err != nil {
		return 0, err
	}
	return cid, nil
}

// writeFlat writes the flat extent; a thin one skips zero chunks, which
// the final truncate leaves as holes.
func writeFlat(path string, content io.ReaderAt, size int64, thin bool) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if err := f.Truncate(size); err != nil {
		return err
	}
	if content == nil {
		return nil
	}
	buf := make([]byte, copyChunk)
	zero := make([]byte, thinPiece)
	for off := int64(0); off < size; off += copyChunk {
		p := buf[:min(copyChunk, size-off)]
		if err := readContent(content, p, off); err != nil {
			return fmt.Errorf("vmdktest: base content at byte %d: %w", off, err)
		}
		if !thin {
			if _, err := f.WriteAt(p, off); err != nil {
				return err
			}
			continue
		}
		// Thin: only the 64 KiB pieces holding something are written.
		for i := 0; i < len(p); i += thinPiece {
			q := p[i:min(len(p), i+thinPiece)]
			if bytes.Equal(q, zero[:len(q)]) {
				continue
			}
			if _, err := f.WriteAt(q, off+int64(i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// thinPiece is the unit a thin flat file is allocated in here.
const thinPiece = 64 << 10

// readContent fills p from r at off; content shorter than the disk reads
// as zeros past its end.
func readContent(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	clear(p[n:])
	return nil
}
