package target

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// deviceFile is a regular file written as a device: 0xff in [0, 1 MiB),
// a hole (reading zeros, no blocks) in the 7 MiB after. A zero written
// into the hole allocates it, so the file's blocks show what was written.
func deviceFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xff}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 8<<20); err != nil {
		t.Fatal(err)
	}
	if a := AllocatedBytes(path); a > 1<<20+64<<10 {
		t.Fatalf("the filesystem allocated %d bytes for 1 MiB: no holes here", a)
	}
	return path
}

// Zero over a whole device, in each mode: probe zeroes what reads old data
// and leaves what already reads zeros untouched (the hole stays a hole),
// write zeroes everything, skip nothing.
func TestBlockZeroModes(t *testing.T) {
	for _, tc := range []struct {
		mode      ZeroMode
		zeroed    bool  // the 0xff MiB reads zeros after
		allocated int64 // at most this many bytes allocated after
		atLeast   int64 // and at least this many
	}{
		{ZeroProbe, true, 1<<20 + 64<<10, 0},
		{ZeroWrite, true, 8 << 20, 7 << 20},
		{ZeroSkip, false, 1<<20 + 64<<10, 1 << 20},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			path := deviceFile(t)
			tg, err := Open(path, 8<<20, Options{Block: true, Zero: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			if err := tg.Zero(0, 8<<20); err != nil {
				t.Fatal(err)
			}
			if err := tg.Finish(8 << 20); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if len(got) != 8<<20 {
				t.Fatalf("the device is now %d bytes", len(got))
			}
			if zeroed := bytes.Equal(got[:1<<20], make([]byte, 1<<20)); zeroed != tc.zeroed {
				t.Fatalf("old data zeroed: %v, want %v", zeroed, tc.zeroed)
			}
			if !bytes.Equal(got[1<<20:], make([]byte, 7<<20)) {
				t.Fatal("the hole does not read zeros")
			}
			if a := AllocatedBytes(path); a > tc.allocated || a < tc.atLeast {
				t.Fatalf("%d bytes allocated after Zero, want %d to %d", a, tc.atLeast, tc.allocated)
			}
		})
	}
}
