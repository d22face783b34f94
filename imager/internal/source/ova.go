package source

import (
	"archive/tar"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// maxOVF bounds the OVF descriptor read into memory.
const maxOVF = 16 << 20

// ovfEnvelope is the part of an OVF descriptor an import needs: the files
// the package holds and the disks that use them. Names match in any XML
// namespace (ovf: attributes included).
type ovfEnvelope struct {
	Files []ovfFile `xml:"References>File"`
	Disks []ovfDisk `xml:"DiskSection>Disk"`
}

type ovfFile struct {
	ID          string `xml:"id,attr"`
	Href        string `xml:"href,attr"`
	Compression string `xml:"compression,attr"`
	ChunkSize   string `xml:"chunkSize,attr"`
}

type ovfDisk struct {
	DiskID  string `xml:"diskId,attr"`
	FileRef string `xml:"fileRef,attr"`
}

// OVADisk is the disk an import takes out of an OVA.
type OVADisk struct {
	Href        string // its member name in the tar
	Gzip        bool   // the member is gzip-compressed (ovf:compression)
	Index, Of   int
	Description string
}

// pickOVADisk finds the disk selected by sel: "" (the first disk), its
// 0-based index among the OVF's disks, its diskId or its file name.
func pickOVADisk(ovf []byte, sel string) (*OVADisk, error) {
	var env ovfEnvelope
	if err := xml.Unmarshal(ovf, &env); err != nil {
		return nil, damaged(fmt.Errorf("OVA: OVF descriptor: %w", err))
	}
	if len(env.Disks) == 0 {
		return nil, damaged(errors.New("OVA: the OVF descriptor lists no disks"))
	}
	files := map[string]ovfFile{}
	for _, f := range env.Files {
		files[f.ID] = f
	}
	var names []string
	pick := -1
	for i, d := range env.Disks {
		f, ok := files[d.FileRef]
		if !ok {
			return nil, damaged(fmt.Errorf("OVA: disk %q names file %q, which References does not list", d.DiskID, d.FileRef))
		}
		names = append(names, fmt.Sprintf("%d=%s(%s)", i, d.DiskID, f.Href))
		if pick < 0 && (sel == "" || sel == strconv.Itoa(i) || sel == d.DiskID || sel == f.Href) {
			pick = i
		}
	}
	if pick < 0 {
		return nil, invalid(fmt.Errorf("OVA: no disk %q; the OVF lists %s", sel, strings.Join(names, ", ")))
	}
	f := files[env.Disks[pick].FileRef]
	if f.ChunkSize != "" {
		return nil, unsupported(fmt.Errorf("OVA: disk file %q is split into chunks, which imager does not join", f.Href))
	}
	switch f.Compression {
	case "", "identity", "gzip":
	default:
		return nil, unsupported(fmt.Errorf("OVA: disk file %q has compression %q", f.Href, f.Compression))
	}
	if !validMember(f.Href) {
		return nil, damaged(fmt.Errorf("OVA: disk file name %q is not a plain member name", f.Href))
	}
	return &OVADisk{Href: path.Clean(f.Href), Gzip: f.Compression == "gzip", Index: pick, Of: len(env.Disks), Description: names[pick]}, nil
}

// validMember accepts relative names that stay inside the archive.
func validMember(name string) bool {
	c := path.Clean(name)
	return name != "" && !path.IsAbs(c) && c != ".." && !strings.HasPrefix(c, "../") && !strings.Contains(name, "\\")
}

// OpenOVADisk reads an OVA from r up to the selected disk's member and
// returns that member's reader and size. The OVF descriptor must be the
// first file, as the OVF specification requires, so the disk can be
// streamed without reading the archive twice.
func OpenOVADisk(r io.Reader, sel string) (io.Reader, *OVADisk, int64, error) {
	tr := tar.NewReader(r)
	var disk *OVADisk
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			if disk == nil {
				return nil, nil, 0, damaged(errors.New("OVA: no .ovf descriptor in the archive"))
			}
			return nil, nil, 0, damaged(fmt.Errorf("OVA: the archive has no member %q", disk.Href))
		}
		if err != nil {
			return nil, nil, 0, ovaErr(err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(hdr.Name)
		if disk == nil {
			if !strings.EqualFold(path.Ext(name), ".ovf") {
				return nil, nil, 0, damaged(fmt.Errorf("OVA: the first file is %q; the OVF descriptor must come first", hdr.Name))
			}
			if hdr.Size > maxOVF {
				return nil, nil, 0, damaged(fmt.Errorf("OVA: OVF descriptor of %d bytes (at most %d)", hdr.Size, maxOVF))
			}
			ovf, err := io.ReadAll(tr)
			if err != nil {
				return nil, nil, 0, ovaErr(err)
			}
			if disk, err = pickOVADisk(ovf, sel); err != nil {
				return nil, nil, 0, err
			}
			continue
		}
		if name == disk.Href {
			return tr, disk, hdr.Size, nil
		}
	}
}

// ovaErr says where a tar error came from; classify tells a damaged
// archive (permanent) from a failed read.
func ovaErr(err error) error {
	return fmt.Errorf("OVA: %w", err)
}
