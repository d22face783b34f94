package copy

import (
	"math/rand"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// discard is a target that takes everything and keeps nothing.
type discard struct{ unit int }

func (d discard) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
func (d discard) Zero(off, n int64) error                  { return nil }
func (d discard) HoleUnit() int                            { return d.unit }
func (d discard) Ordered() bool                            { return false }
func (d discard) Path() string                             { return "" }
func (d discard) Finish(int64) error                       { return nil }
func (d discard) Abort()                                   {}
func (d discard) Describe(*jobapi.Result)                  {}

// BenchmarkWriteSparse is the zero detection of every data chunk a
// convert or import writes: a chunk of 4 KiB units, a quarter of them
// zero, into a target that costs nothing.
func BenchmarkWriteSparse(b *testing.B) {
	buf := make([]byte, ChunkSize)
	r := rand.New(rand.NewSource(1))
	for off := 0; off < len(buf); off += 4096 {
		if r.Intn(4) != 0 {
			r.Read(buf[off : off+4096])
		}
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteSparse(discard{unit: 4096}, buf, 0); err != nil {
			b.Fatal(err)
		}
	}
}
