package main

import (
	"fmt"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// BlockStatus of a raw file follows its holes (SEEK_DATA/SEEK_HOLE), so a
// sparse multi-TiB raw source costs what it stores; data ranges may still
// hold zeros (found when copying). Where the filesystem cannot tell, and
// on devices, everything is data.
func (r rawImage) BlockStatus(off, n int64) (vmdk.Mapping, error) {
	if off < 0 || n <= 0 || off >= r.size || n > r.size-off {
		return vmdk.Mapping{}, fmt.Errorf("%s: %w: block status of [%d, +%d) outside the image", r.Name(), vmdk.ErrOutOfRange, off, n)
	}
	data := vmdk.Mapping{Offset: off, Length: n, Data: true, Allocated: true, File: r.Name(), HostOffset: off}
	next, ok := vmdk.NextData(r.File, off)
	if !ok {
		return data, nil
	}
	if next = min(next, r.size); next > off {
		return vmdk.Mapping{Offset: off, Length: min(n, next-off), Zero: true, HostOffset: -1, Depth: 1}, nil
	}
	if hole, ok := vmdk.NextHole(r.File, off); ok && hole > off {
		data.Length = min(n, hole-off)
	}
	return data, nil
}
