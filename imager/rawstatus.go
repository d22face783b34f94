package main

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

const (
	seekData = 3 // SEEK_DATA (Linux)
	seekHole = 4 // SEEK_HOLE
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
	next, err := r.Seek(off, seekData)
	switch {
	case errors.Is(err, syscall.ENXIO): // only a hole follows
		next = r.size
	case err != nil:
		return data, nil
	}
	if next > off {
		return vmdk.Mapping{Offset: off, Length: min(n, next-off), Zero: true, HostOffset: -1, Depth: 1}, nil
	}
	hole, err := r.Seek(off, seekHole)
	if err == nil && hole > off {
		data.Length = min(n, hole-off)
	}
	return data, nil
}
