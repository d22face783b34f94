package copy

import (
	"bytes"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// recorder is a target that records what reaches it.
type recorder struct {
	unit         int
	data, zeroed [][2]int64 // offset, length
}

func (r *recorder) WriteAt(p []byte, off int64) (int, error) {
	r.data = append(r.data, [2]int64{off, int64(len(p))})
	return len(p), nil
}
func (r *recorder) Zero(off, n int64) error {
	r.zeroed = append(r.zeroed, [2]int64{off, n})
	return nil
}
func (r *recorder) HoleUnit() int           { return r.unit }
func (r *recorder) Ordered() bool           { return false }
func (r *recorder) Path() string            { return "" }
func (r *recorder) Finish(int64) error      { return nil }
func (r *recorder) Abort()                  {}
func (r *recorder) Describe(*jobapi.Result) {}

// Zero blocks, cut at the unit's boundaries, become Zero calls; the
// rest is data.
func TestWriteSparse(t *testing.T) {
	buf := append(append(bytes.Repeat([]byte{1}, 4096), make([]byte, 8192)...), 1)
	r := &recorder{unit: 4096}
	if err := WriteSparse(r, buf, 0); err != nil {
		t.Fatal(err)
	}
	if len(r.data) != 2 || r.data[0] != [2]int64{0, 4096} || r.data[1] != [2]int64{12288, 1} {
		t.Fatalf("data %v", r.data)
	}
	if len(r.zeroed) != 1 || r.zeroed[0] != [2]int64{4096, 8192} {
		t.Fatalf("zeroed %v", r.zeroed)
	}
	r = &recorder{unit: 4096}
	b := make([]byte, 8192)
	b[5000] = 1 // in the unit from 4096 (at 100: 4196 to 8292)
	WriteSparse(r, b, 100)
	if len(r.data) != 1 || r.data[0] != [2]int64{3996 + 100, 4096} || len(r.zeroed) != 2 {
		t.Fatalf("unaligned: data %v zeroed %v", r.data, r.zeroed)
	}
}
