package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// A compressed image without markers whose grain table points past the end
// of the file is corrupt, not a crash.
func TestCompressedNoMarkerPastEOF(t *testing.T) {
	img := readFileT(t, "testdata/stream-qemu.vmdk")
	d, err := OpenReaderAt(bytes.NewReader(img), int64(len(img)), "s.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	e := d.extents[0].ext.(*sparseExtent)
	gt := int64(e.gd[0]) * SectorSize
	binary.LittleEndian.PutUint32(img[8:], flagCompressed|flagNewlineCheck) // no markers
	for j := int64(0); j < 4; j++ {
		binary.LittleEndian.PutUint32(img[gt+j*4:], 1000000)
	}
	d, err = OpenReaderAt(bytes.NewReader(img), int64(len(img)), "s.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{4096, 256 << 10} {
		if _, err := d.ReadAt(make([]byte, n), 0); !errors.Is(err, ErrCorrupt) {
			t.Errorf("read of %d bytes: %v, want ErrCorrupt", n, err)
		}
	}
}
