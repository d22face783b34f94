package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
)

// Kind is what Probe recognised at the start of a file.
type Kind int

const (
	KindUnknown    Kind = iota
	KindSparse          // hosted sparse extent, "KDMV" (monolithicSparse, streamOptimized, ...)
	KindCOWD            // VMDK3 / vmfsSparse extent, "COWD"
	KindSESparse        // ESXi seSparse extent
	KindDescriptor      // a descriptor text file
)

func (k Kind) String() string {
	return [...]string{"unknown", "KDMV sparse", "COWD sparse", "seSparse", "descriptor"}[k]
}

const seSparseMagic = 0x00000000cafebabe

// probeBytes is how much of a file Probe looks at: enough for long comment
// blocks before a descriptor's version line.
const probeBytes = 64 << 10

// Probe tells whether r starts like a VMDK: a KDMV or COWD sparse header,
// or descriptor text (comments and blank lines, then a version= line).
// Anything else is ErrNotVMDK.
func Probe(r io.ReaderAt) (Kind, error) {
	buf := make([]byte, probeBytes)
	n, err := r.ReadAt(buf, 0)
	if n == 0 && err != nil && !errors.Is(err, io.EOF) {
		return KindUnknown, err
	}
	buf = buf[:n]
	switch {
	case len(buf) >= 4 && string(buf[:4]) == magicKDMV:
		return KindSparse, nil
	case len(buf) >= 4 && string(buf[:4]) == magicCOWD:
		return KindCOWD, nil
	case len(buf) >= 8 && binary.LittleEndian.Uint64(buf) == seSparseMagic:
		return KindSESparse, nil
	case looksLikeDescriptor(buf):
		return KindDescriptor, nil
	}
	return KindUnknown, ErrNotVMDK
}

// looksLikeDescriptor accepts text whose lines within the probe window are
// comments, blank, key=value or extent lines, with a version key among
// them (usually first, but the grammar does not require it).
func looksLikeDescriptor(buf []byte) bool {
	if i := bytes.IndexByte(buf, 0); i >= 0 {
		buf = buf[:i] // qemu pads rewritten descriptors with NULs
	}
	for len(buf) > 0 {
		line, rest, found := bytes.Cut(buf, []byte("\n"))
		if !found && len(line) == probeBytes {
			return false // a line longer than we looked at
		}
		buf = rest
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		k, _, ok := bytes.Cut(line, []byte("="))
		if !ok {
			if _, isExtent, _ := parseExtentLine(string(line)); isExtent {
				continue
			}
			return false
		}
		if bytes.EqualFold(bytes.TrimSpace(k), []byte("version")) {
			return true
		}
	}
	return false
}
