package vmdk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
)

// buildCOWD writes raw as a VMDK3/vmfsSparse (COWD) extent, a fixture
// independent of the package's code: header, GD at sector 4, 4096-entry GTs,
// then the non-zero grains.
func buildCOWD(t testing.TB, raw []byte, grainSectors uint32) []byte {
	t.Helper()
	sectors := uint32((len(raw) + 511) / 512)
	grain := int(grainSectors) * 512
	gdEntries := (sectors + grainSectors*4096 - 1) / (grainSectors * 4096)
	gdSectors := (gdEntries*4 + 511) / 512
	gtStart := 4 + gdSectors
	img := make([]byte, (gtStart+gdEntries*32)*512)
	copy(img, "COWD")
	le := binary.LittleEndian
	le.PutUint32(img[4:], 1)
	le.PutUint32(img[8:], 3)
	le.PutUint32(img[12:], sectors)
	le.PutUint32(img[16:], grainSectors)
	le.PutUint32(img[20:], 4)
	le.PutUint32(img[24:], gdEntries)
	for i := uint32(0); i < gdEntries; i++ {
		le.PutUint32(img[4*512+i*4:], gtStart+i*32)
	}
	for g := 0; g*grain < len(raw); g++ {
		data := raw[g*grain : min((g+1)*grain, len(raw))]
		if bytes.Equal(data, make([]byte, len(data))) {
			continue
		}
		at := uint32(len(img) / 512)
		gt := int(gtStart)*512 + (g/4096)*4096*4 + (g%4096)*4
		le.PutUint32(img[gt:], at)
		img = append(img, data...)
		img = append(img, make([]byte, grain-len(data))...)
	}
	le.PutUint32(img[28:], uint32(len(img)/512))
	return img
}

func TestCOWD(t *testing.T) {
	raw := mixedContent(11, 40<<20+7*512) // two grain tables of 8 KiB grains
	img := buildCOWD(t, raw, 16)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "c-delta.vmdk"), img)
	d := mustOpen(t, filepath.Join(dir, "c-delta.vmdk"), Options{})
	sameBytes(t, "bare COWD", readAll(t, d), raw)
	// The same extent behind a vmfsSparse descriptor.
	writeFile(t, filepath.Join(dir, "c.vmdk"), []byte(fmt.Sprintf(
		"version=1\nCID=0000000a\nparentCID=ffffffff\ncreateType=\"vmfsSparse\"\nRW %d VMFSSPARSE \"c-delta.vmdk\"\n", len(raw)/512)))
	d = mustOpen(t, filepath.Join(dir, "c.vmdk"), Options{})
	sameBytes(t, "vmfsSparse descriptor", readAll(t, d), raw)
}
