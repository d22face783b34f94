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

func looksLikeDescriptor(buf []byte) bool {
	for len(buf) > 0 {
		line, rest, found := bytes.Cut(buf, []byte("\n"))
		if !found && len(buf) == probeBytes {
			return false // a line longer than we looked at
		}
		line = bytes.TrimSpace(line)
		switch {
		case len(line) == 0 || line[0] == '#':
			buf = rest
			continue
		case len(line) >= 8 && bytes.EqualFold(line[:8], []byte("version=")):
			return true
		}
		k, _, ok := bytes.Cut(line, []byte("="))
		return ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("version"))
	}
	return false
}
