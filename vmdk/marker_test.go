package vmdk

import (
	"slices"
	"testing"
)

// TestMarkerCodec: markers and grain tables round-trip through their one
// codec, and grainErr draws the line where a grain marker stops being
// valid.
func TestMarkerCodec(t *testing.T) {
	for _, m := range []marker{{val: 128, size: 4000}, {val: 3, typ: markerGT}, {val: 0, typ: markerEOS}} {
		b := m.encode()
		if want := map[bool]int{true: SectorSize, false: grainMarkerSize}[m.size == 0]; len(b) != want {
			t.Errorf("%+v: %d bytes, want %d", m, len(b), want)
		}
		if got := parseMarker(b); got != m {
			t.Errorf("round trip of %+v: %+v", m, got)
		}
	}
	const grain, capacity = 64 << 10, 1 << 20 // 16 grains of 128 sectors
	limit := uint32(maxCompressedSize(grain))
	for _, c := range []struct {
		m    marker
		good bool
	}{
		{marker{val: 0, size: 1}, true},
		{marker{val: 15 * 128, size: limit}, true},
		{marker{val: 0, size: 0}, false},
		{marker{val: 0, size: limit + 1}, false},
		{marker{val: 64, size: 100}, false},       // not a grain start
		{marker{val: 16 * 128, size: 100}, false}, // at the capacity
		{marker{val: 1 << 62, size: 100}, false},  // far past it
	} {
		if err := c.m.grainErr(grain, capacity); (err == nil) != c.good {
			t.Errorf("grainErr(%+v) = %v, want valid %v", c.m, err, c.good)
		}
	}
	gt := []uint32{0, 1, 128, 1<<32 - 1}
	if got := decodeEntries(appendEntries(nil, gt)); !slices.Equal(got, gt) {
		t.Errorf("grain table round trip: %v", got)
	}
}
