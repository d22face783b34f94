package source

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/ovf"
)

// maxOVF bounds the OVF descriptor read into memory.
const maxOVF = 16 << 20

// OVADisk is a disk of an OVA, as its OVF descriptor lists it.
type OVADisk struct {
	Href   string // its file's member name in the tar
	DiskID string
	Gzip   bool // the file is gzip-compressed (ovf:compression)
	// ChunkSize > 0: the file is stored as the members Href.000000000,
	// Href.000000001, ..., each of ChunkSize bytes but the last
	// (ovf:chunkSize, DSP0243 5.3).
	ChunkSize int64
	// Size is the file's ovf:size (of all its chunks together), 0 when
	// not given.
	Size int64
	// Capacity is the disk's ovf:capacity in bytes, 0 when not a number
	// (a ${property}) or in units imager does not read.
	Capacity    int64
	Index, Of   int
	Description string
	// SHA256 is the hex sha256 of the file's one member, once it was read
	// and hashed (a manifest's SHA256 line, or the wait for a manifest);
	// empty for a chunked file or one not hashed.
	SHA256 string
	// problem is why the disk cannot be imported (a compression imager
	// does not read, a delta of another disk): refused only if asked for,
	// so an OVA's other disks still import.
	problem error
}

// parseEnvelope lists the disks of an OVF descriptor with their files,
// read with govmomi's ovf package (the field's own OVF types).
func parseEnvelope(b []byte) ([]*OVADisk, error) {
	env, err := ovf.Unmarshal(bytes.NewReader(b))
	if err != nil {
		return nil, damaged(fmt.Errorf("OVA: OVF descriptor: %w", err))
	}
	if env.Disk == nil || len(env.Disk.Disks) == 0 {
		return nil, damaged(errors.New("OVA: the OVF descriptor lists no disks"))
	}
	files := map[string]ovf.File{}
	for _, f := range env.References {
		if _, dup := files[f.ID]; dup {
			return nil, damaged(fmt.Errorf("OVA: the OVF descriptor lists file id %q twice", f.ID))
		}
		files[f.ID] = f
	}
	var disks []*OVADisk
	hrefs := map[string]string{} // member name -> the disk using it
	for i, d := range env.Disk.Disks {
		ref := ""
		if d.FileRef != nil {
			ref = *d.FileRef
		}
		f, ok := files[ref]
		if !ok {
			return nil, damaged(fmt.Errorf("OVA: disk %q names file %q, which References does not list", d.DiskID, ref))
		}
		if !validMember(f.Href) {
			return nil, damaged(fmt.Errorf("OVA: disk file name %q is not a plain member name", f.Href))
		}
		href := path.Clean(f.Href)
		if other, dup := hrefs[href]; dup {
			return nil, damaged(fmt.Errorf("OVA: disks %q and %q name the same file %q", other, d.DiskID, href))
		}
		hrefs[href] = d.DiskID
		disk := &OVADisk{Href: href, DiskID: d.DiskID, Index: i, Description: fmt.Sprintf("%d=%s(%s)", i, d.DiskID, f.Href)}
		if f.Size > math.MaxInt64 {
			return nil, damaged(fmt.Errorf("OVA: file %q has ovf:size %d", href, f.Size))
		}
		disk.Size = int64(f.Size)
		if disk.Capacity, err = parseCapacity(d.Capacity, d.CapacityAllocationUnits); err != nil {
			return nil, damaged(fmt.Errorf("OVA: disk %q: %w", d.DiskID, err))
		}
		if f.ChunkSize != nil {
			if *f.ChunkSize <= 0 {
				return nil, damaged(fmt.Errorf("OVA: file %q has ovf:chunkSize %d", href, *f.ChunkSize))
			}
			disk.ChunkSize = int64(*f.ChunkSize)
		}
		compression := ""
		if f.Compression != nil {
			compression = *f.Compression
		}
		switch compression {
		case "", "identity":
		case "gzip":
			disk.Gzip = true
		default:
			disk.problem = unsupported(fmt.Errorf("OVA: disk file %q has compression %q", href, compression))
		}
		if d.ParentRef != nil && *d.ParentRef != "" {
			// A delta alone is not the disk: its parent's data is missing.
			disk.problem = unsupported(fmt.Errorf("OVA: disk %q is a delta of disk %q (ovf:parentRef), which imager does not join: import the parent's chain from its datastore", d.DiskID, *d.ParentRef))
		}
		disks = append(disks, disk)
	}
	for _, d := range disks {
		d.Of = len(disks)
	}
	return disks, nil
}

// CheckRaw refuses a raw disk of n bytes whose ovf:capacity is another
// size: a raw disk's file is the disk.
func (d *OVADisk) CheckRaw(n int64) error {
	if d.Capacity > 0 && n != d.Capacity {
		return damaged(fmt.Errorf("OVA: disk %s: a raw disk of %d bytes, but its ovf:capacity is %d bytes: the package is damaged or its descriptor wrong", d.Description, n, d.Capacity))
	}
	return nil
}

// parseCapacity reads a Disk's ovf:capacity in bytes: a decimal number of
// ovf:capacityAllocationUnits, "byte" (the default) or "byte * 2^N" as
// exporters write them. Anything else (a ${property}, other units) is 0,
// unknown: only a capacity known for sure is checked against the disk.
func parseCapacity(capacity string, units *string) (int64, error) {
	n, err := strconv.ParseInt(capacity, 10, 64)
	if err != nil || n <= 0 || capacity[0] == '+' {
		return 0, nil
	}
	shift := 0
	if units != nil {
		u := strings.ToLower(strings.Join(strings.Fields(*units), ""))
		switch exp, ok := strings.CutPrefix(u, "byte*2^"); {
		case u == "" || u == "byte":
		case !ok:
			return 0, nil
		default:
			if shift, err = strconv.Atoi(exp); err != nil || shift < 0 || shift > 62 || exp[0] == '+' {
				return 0, nil
			}
		}
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("ovf:capacity %s of %s overflows", capacity, *units)
	}
	return n << shift, nil
}

// pick finds the disk selected by sel: "" (the first disk), its 0-based
// index among the OVF's disks, its diskId or its file name. A sel that
// names two disks (one's index, another's diskId "1") is refused: taking
// the first would import a disk the caller may not have meant.
func pick(disks []*OVADisk, sel string) (*OVADisk, error) {
	var names []string
	var found *OVADisk
	for i, d := range disks {
		names = append(names, d.Description)
		if sel == "" && i == 0 {
			found = d // the default, which names no other disk
			break
		}
		if sel != strconv.Itoa(i) && sel != d.DiskID && sel != d.Href {
			continue
		}
		if found != nil {
			return nil, invalid(fmt.Errorf("OVA: disk %q names both %s and %s (index=diskId(file name)): give the one meant by another of its index, diskId or file name", sel, found.Description, d.Description))
		}
		found = d
	}
	switch {
	case found == nil:
		return nil, invalid(fmt.Errorf("OVA: no disk %q; the OVF lists %s", sel, strings.Join(names, ", ")))
	case found.problem != nil:
		return nil, found.problem
	}
	return found, nil
}

// validMember accepts relative names that stay inside the archive.
func validMember(name string) bool {
	c := path.Clean(name)
	return name != "" && !path.IsAbs(c) && c != ".." && !strings.HasPrefix(c, "../") && !strings.Contains(name, "\\")
}
