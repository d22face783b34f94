package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// Kind is what an import source holds, told from its first bytes.
type Kind int

const (
	KindRaw    Kind = iota
	KindStream      // streamOptimized VMDK: imported while it is read
	KindVMDK        // any other VMDK: needs random access
	KindOVA         // tar of an OVF descriptor and its disks
	KindGzip
	KindZstd
)

func (k Kind) String() string {
	return [...]string{"raw", "streamOptimized VMDK", "VMDK", "OVA", "gzip", "zstd"}[k]
}

// HeadBytes is how much of a source Detect looks at.
const HeadBytes = 64 << 10

// Detect tells what a source holds from its first bytes (fewer than
// HeadBytes only when the source is that short). format forces raw, vmdk
// or ova; "auto" trusts the bytes.
func Detect(head []byte, format string) (Kind, error) {
	if len(head) == 0 {
		// An empty source is an upstream failure (a cut pipe, an empty
		// object), never a disk: a 0-byte disk.img would boot nothing.
		return 0, damaged(errors.New("the source is empty"))
	}
	switch format {
	case "raw":
		return KindRaw, nil
	case "ova":
		if !isTar(head) {
			return 0, damaged(errors.New("--source-format ova: the source is not a tar archive"))
		}
		return KindOVA, nil
	}
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return KindGzip, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return KindZstd, nil
	case isTar(head) && format == "auto":
		return KindOVA, nil
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return 0, unsupported(errors.New("the source is a qcow2 image: convert it with qemu-img, or import it with a qcow2-aware tool"))
	case bytes.HasPrefix(head, []byte("vhdxfile")), bytes.HasPrefix(head, []byte("conectix")):
		return 0, unsupported(errors.New("the source is a VHD/VHDX image, which imager does not read"))
	}
	k, err := vmdk.Probe(bytes.NewReader(head))
	switch {
	case errors.Is(err, vmdk.ErrNotVMDK):
		if format == "vmdk" {
			return 0, damaged(errors.New("--source-format vmdk: the source does not start like a VMDK"))
		}
		return KindRaw, nil
	case err != nil:
		return 0, err
	case k == vmdk.KindSparse:
		h, err := vmdk.ParseSparseHeader(head)
		if err != nil {
			return 0, damaged(fmt.Errorf("sparse header: %w", err))
		}
		if h.Compressed() {
			return KindStream, nil
		}
	}
	// A seSparse extent is a VMDK too: vmdk decides (it refuses a bare
	// delta, whose parent only its descriptor names).
	return KindVMDK, nil
}

// isTar recognises a POSIX/GNU tar header's magic.
func isTar(head []byte) bool {
	return len(head) >= 262 && string(head[257:262]) == "ustar"
}

// Decompress reads the gzip or zstd stream r holds (k: KindGzip or
// KindZstd). zstd's window is bounded: a hostile stream cannot make imager
// allocate more than 256 MiB.
func Decompress(k Kind, r io.Reader) (io.ReadCloser, error) {
	if k == KindGzip {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, damaged(fmt.Errorf("gzip: %w", err))
		}
		return zr, nil
	}
	zr, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(256<<20), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, damaged(fmt.Errorf("zstd: %w", err))
	}
	return zr.IOReadCloser(), nil
}
