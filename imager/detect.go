package main

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmdkpop/vmdkpop/imager/result"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// sourceKind is what an import source holds, told from its first bytes.
type sourceKind int

const (
	kindRaw    sourceKind = iota
	kindStream            // streamOptimized VMDK: imported while it is read
	kindVMDK              // any other VMDK: needs random access
	kindOVA               // tar of an OVF descriptor and its disks
	kindGzip
	kindZstd
)

func (k sourceKind) String() string {
	return [...]string{"raw", "streamOptimized VMDK", "VMDK", "OVA", "gzip", "zstd"}[k]
}

// headBytes is how much of a source detect looks at.
const headBytes = 64 << 10

// detect tells what a source holds from its first bytes (fewer than
// headBytes only when the source is that short). format forces raw, vmdk
// or ova; "auto" trusts the bytes.
func detect(head []byte, format string) (sourceKind, error) {
	switch format {
	case "raw":
		return kindRaw, nil
	case "ova":
		if !isTar(head) {
			return 0, permanent(result.ReasonInvalidImage, errors.New("--source-format ova: the source is not a tar archive"))
		}
		return kindOVA, nil
	}
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return kindGzip, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return kindZstd, nil
	case isTar(head) && format == "auto":
		return kindOVA, nil
	case bytes.HasPrefix(head, []byte("QFI\xfb")):
		return 0, permanent(result.ReasonUnsupportedImage, errors.New("the source is a qcow2 image: convert it with qemu-img, or import it with a qcow2-aware tool"))
	case bytes.HasPrefix(head, []byte("vhdxfile")), bytes.HasPrefix(head, []byte("conectix")):
		return 0, permanent(result.ReasonUnsupportedImage, errors.New("the source is a VHD/VHDX image, which imager does not read"))
	}
	k, err := vmdk.Probe(bytes.NewReader(head))
	switch {
	case errors.Is(err, vmdk.ErrNotVMDK):
		if format == "vmdk" {
			return 0, permanent(result.ReasonInvalidImage, errors.New("--source-format vmdk: the source does not start like a VMDK"))
		}
		return kindRaw, nil
	case err != nil:
		return 0, err
	case k == vmdk.KindSparse:
		h, err := vmdk.ParseSparseHeader(head)
		if err != nil {
			return 0, permanent(result.ReasonInvalidImage, fmt.Errorf("sparse header: %w", err))
		}
		if h.Compressed() {
			return kindStream, nil
		}
	case k == vmdk.KindSESparse:
		return 0, permanent(result.ReasonUnsupportedImage, fmt.Errorf("%w: seSparse images", vmdk.ErrUnsupported))
	}
	return kindVMDK, nil
}

// isTar recognises a POSIX/GNU tar header's magic.
func isTar(head []byte) bool {
	return len(head) >= 262 && string(head[257:262]) == "ustar"
}
