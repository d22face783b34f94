package vmdk

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The power-loss tests run a writer against the recording file system of
// powerfs_test.go, then rebuild what a power cut at sampled points could
// have left (synced state plus any subset of the unsynced sector writes,
// plus a prefix of the unsynced directory changes) and check that it opens
// (or, before the image was ever complete, is refused), that everything a
// completed Flush acknowledged reads back exactly, that nothing reads as
// bytes nobody wrote, and that Check finds at most leaks. crash_test.go's
// kill -9 keeps the page cache, so it cannot see a missing fsync; these can.
//
// VMDKPOP_POWERLOSS_SEED=n reproduces a run.

const plMiB = 1 << 20

func powerSeed(t *testing.T) *rand.Rand {
	seed := time.Now().UnixNano()
	if s := os.Getenv("VMDKPOP_POWERLOSS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("VMDKPOP_POWERLOSS_SEED: %v", err)
		}
	}
	t.Logf("seed %d (VMDKPOP_POWERLOSS_SEED=%d reproduces it)", seed, seed)
	return rand.New(rand.NewSource(seed))
}

// plWrite is one guest write of the workload; its bytes depend on id and
// the guest offset, so a grain read from the wrong place or the wrong write
// shows.
type plWrite struct {
	off, n int64
	id     int
	zero   bool
}

func (w plWrite) at(off int64) byte {
	if w.zero {
		return 0
	}
	return byte(uint32(off/7)*2654435761>>24) ^ byte(w.id*37+1)
}

func (w plWrite) bytes() []byte {
	b := make([]byte, w.n)
	for i := range b {
		b[i] = w.at(w.off + int64(i))
	}
	return b
}

// plModel is what the guest disk must hold: base writes (all durable before
// the workload starts), then writes of which the marks say how many a
// Flush acknowledged.
type plModel struct {
	size    int64
	windows [][2]int64 // the guest ranges written and verified
	base    []plWrite
	writes  []plWrite
	wants   map[string][]byte // want's results
}

// randomWrites makes n writes inside the windows: unaligned, some crossing
// grains, some overwriting earlier ones, a few all zeros.
func (m *plModel) randomWrites(rnd *rand.Rand, n, firstID int) []plWrite {
	var ws []plWrite
	for i := range n {
		w := m.windows[rnd.Intn(len(m.windows))]
		off := w[0] + rnd.Int63n(w[1]-w[0]-1)
		ws = append(ws, plWrite{off: off, n: 1 + rnd.Int63n(min(w[1]-off, 300<<10)), id: firstID + i, zero: rnd.Intn(6) == 0})
	}
	return ws
}

// powerMarkNumber is the largest n of the marks "prefix n", or -1.
func powerMarkNumber(marks []string, prefix string) int {
	last := -1
	for _, m := range marks {
		if s, ok := strings.CutPrefix(m, prefix+" "); ok {
			n, _ := strconv.Atoi(s)
			last = max(last, n)
		}
	}
	return last
}

// want is window win's content with the base and writes up to acked:
// computed once per window and acked, as every cut asks again.
func (m *plModel) want(win [2]int64, acked int) []byte {
	key := fmt.Sprint(win, acked)
	if b, ok := m.wants[key]; ok {
		return b
	}
	b := make([]byte, win[1]-win[0])
	for _, w := range append(append([]plWrite(nil), m.base...), m.writes[:acked+1]...) {
		lo, hi := max(w.off, win[0]), min(w.off+w.n, win[1])
		for off := lo; off < hi; off++ {
			b[off-win[0]] = w.at(off)
		}
	}
	if m.wants == nil {
		m.wants = map[string][]byte{}
	}
	m.wants[key] = b
	return b
}

// verify reads the model's windows from d: writes up to acked must read
// exactly; a byte differing from that may only be one of the writes begun
// after it (acked < j <= begun).
func (m *plModel) verify(d *Disk, acked, begun int) error {
	if d.Size() != m.size {
		return fmt.Errorf("size %d, want %d", d.Size(), m.size)
	}
	for _, win := range m.windows {
		got := make([]byte, win[1]-win[0])
		if _, err := d.ReadAt(got, win[0]); err != nil {
			return fmt.Errorf("read [%d, %d): %w", win[0], win[1], err)
		}
		want := m.want(win, acked)
		for i := range got {
			if got[i] == want[i] {
				continue
			}
			off, ok := win[0]+int64(i), false
			for _, w := range m.writes[acked+1 : begun+1] {
				ok = ok || off >= w.off && off < w.off+w.n && w.at(off) == got[i]
			}
			if !ok {
				var by []string
				for j, w := range m.writes[:begun+1] {
					if off >= w.off && off < w.off+w.n {
						by = append(by, fmt.Sprintf("%d:%#x", j, w.at(off)))
					}
				}
				return fmt.Errorf("byte %d is %#x: want %#x (writes up to %d acknowledged, %d begun; writes there %v)", off, got[i], want[i], acked, begun, by)
			}
		}
	}
	return nil
}

// writeAll runs writes through a ReadWrite Open of path, flushing after
// every third and at the end, marking "begin j" before write j and "acked j"
// once a Flush made writes up to j durable.
func (m *plModel) writeAll(t *testing.T, p *powerFS, path string, ws []plWrite, firstIdx int) {
	t.Helper()
	d := mustOpen(t, path, Options{ReadWrite: true})
	for k, w := range ws {
		j := firstIdx + k
		p.mark("begin %d", j)
		if _, err := d.WriteAt(w.bytes(), w.off); err != nil {
			t.Fatal(err)
		}
		if k%3 == 2 || k == len(ws)-1 {
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			p.mark("acked %d", j)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkImage opens the rebuilt image name in c and verifies it against m,
// and runs Check on it. Before mustOpen is reached (the image was never
// complete), being refused by Open or Check is the right outcome; an
// image that does open must still read right.
func (m *plModel) checkImage(c *powerCut, name, mustOpen string) error {
	path := filepath.Join(c.dir, name)
	d, err := Open(path, Options{})
	if err != nil {
		if c.reached(mustOpen) {
			return fmt.Errorf("open after %q: %w", mustOpen, err)
		}
		return nil
	}
	defer d.Close()
	if err := d.ChainError(); err != nil {
		if c.reached(mustOpen) {
			return fmt.Errorf("chain: %w", err)
		}
		return nil // reads through the chain are refused
	}
	if err := m.verify(d, powerMarkNumber(c.marks, "acked"), powerMarkNumber(c.marks, "begin")); err != nil {
		return err
	}
	if err := checkNoCorruption(path); err != nil && c.reached(mustOpen) {
		return err
	}
	return nil
}

// checkNoCorruption runs Check: leaks are what an interrupted writer may leave,
// anything else is corruption.
func checkNoCorruption(path string) error {
	rep, err := Check(context.Background(), path, CheckOptions{})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if len(rep.Corruptions) != 0 {
		return fmt.Errorf("check: corruptions %q", rep.Corruptions)
	}
	return nil
}

// powerCase runs one scenario's power-cut checks under a bound: the replay
// of a few MiB of recorded writes, cut some 40-100 times, takes seconds
// and tens of MiB (the recorded writes are held in memory).
func powerCase(t *testing.T, p *powerFS, rnd *rand.Rand, start string, budget int, check func(c *powerCut) error) {
	t.Helper()
	var n int
	err := withinBound(t, bound{Time: 15 * time.Second, Mem: 128 << 20}, func() error {
		var first error
		n = p.replay(t, rnd, start, budget, func(c *powerCut) {
			if err := check(c); err != nil && first == nil {
				first = fmt.Errorf("%s: %w", c.note, err)
			}
		})
		return first
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no powerCut point was checked")
	}
	t.Logf("%d power cuts checked", n)
}

func TestPowerLossWriters(t *testing.T) {
	const size = 4 * plMiB
	const big = 2<<30 + 4*plMiB // two extents in the split subformats
	cases := []struct {
		name    string
		opts    CreateOptions
		parent  bool // a flat parent with content: writes copy-on-write
		windows [][2]int64
	}{
		{"monolithicSparse", CreateOptions{Subformat: MonolithicSparse, ImageOptions: ImageOptions{Size: size}}, false, [][2]int64{{0, size}}},
		{"monolithicSparse child zeroed grains", CreateOptions{Subformat: MonolithicSparse, ZeroedGrains: true}, true, [][2]int64{{0, size}}},
		{"twoGbMaxExtentSparse", CreateOptions{Subformat: TwoGbMaxExtentSparse, ImageOptions: ImageOptions{Size: big}}, false, [][2]int64{{0, plMiB}, {2<<30 - plMiB, 2<<30 + plMiB}}},
		{"monolithicFlat", CreateOptions{Subformat: MonolithicFlat, ImageOptions: ImageOptions{Size: size}}, false, [][2]int64{{0, size}}},
		{"twoGbMaxExtentFlat", CreateOptions{Subformat: TwoGbMaxExtentFlat, ImageOptions: ImageOptions{Size: big}}, false, [][2]int64{{0, plMiB}, {2<<30 - plMiB, 2<<30 + plMiB}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rnd := powerSeed(t)
			dir := t.TempDir()
			p := installPowerFS(t, dir)
			top := filepath.Join(dir, "disk.vmdk")
			m := &plModel{size: tc.opts.Size, windows: tc.windows}
			if tc.parent {
				base := filepath.Join(dir, "base.vmdk")
				if err := Create(base, CreateOptions{Subformat: MonolithicFlat, ImageOptions: ImageOptions{Size: size}}); err != nil {
					t.Fatal(err)
				}
				m.size, m.base = size, []plWrite{{off: 0, n: size, id: 1000}}
				bd := mustOpen(t, base, Options{ReadWrite: true})
				if _, err := bd.WriteAt(m.base[0].bytes(), 0); err != nil {
					t.Fatal(err)
				}
				if err := bd.Flush(); err != nil {
					t.Fatal(err)
				}
				bd.Close()
				tc.opts.Backing = base
			}
			p.mark("create")
			if err := Create(top, tc.opts); err != nil {
				t.Fatal(err)
			}
			p.mark("created")
			m.writes = m.randomWrites(rnd, 12, 0)
			// Last, alone between two Flushes, rewrite a range already
			// allocated: in place, no grain table changes.
			for _, w := range m.writes {
				if !w.zero {
					m.writes = append(m.writes, plWrite{off: w.off, n: w.n, id: len(m.writes)})
					break
				}
			}
			m.writeAll(t, p, top, m.writes, 0)
			// Then writes that only Close follows: not acknowledged, so old
			// or new bytes, but never a table entry over unwritten data.
			tail := m.randomWrites(rnd, 3, len(m.writes))
			d := mustOpen(t, top, Options{ReadWrite: true})
			for _, w := range tail {
				p.mark("begin %d", len(m.writes))
				m.writes = append(m.writes, w)
				if _, err := d.WriteAt(w.bytes(), w.off); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			powerCase(t, p, rnd, "create", 60, func(c *powerCut) error {
				return m.checkImage(c, "disk.vmdk", "created")
			})
		})
	}
}

// TestPowerLossStreamWriter writes a streamOptimized image with
// StreamWriter to a file. Once Close returned and the caller synced the
// file and its directory, the image is complete. Before that a power cut
// can leave any part of the stream missing, and the format has no
// checksums: a lost grain table reads as unallocated grains, so callers
// must not publish a stream before syncing it (the imager writes it in a
// temporary directory and renames it into place after the sync). Cuts
// before Close began are refused (no footer yet) or, with nothing missing,
// complete; cuts during Close and before the sync need only end in
// bounded time without a panic, and the test counts how each one ended.
func TestPowerLossStreamWriter(t *testing.T) {
	rnd := powerSeed(t)
	dir := t.TempDir()
	p := installPowerFS(t, dir)
	path := filepath.Join(dir, "disk.vmdk")
	m := &plModel{size: 4 * plMiB, windows: [][2]int64{{0, 4 * plMiB}}}
	// A stream takes content in order: one write per 256 KiB, some zero.
	for off, j := int64(0), 0; off < m.size; off, j = off+256<<10, j+1 {
		m.writes = append(m.writes, plWrite{off: off, n: 256 << 10, id: j, zero: rnd.Intn(4) == 0})
	}
	p.mark("create")
	f, err := host.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	sw, err := NewStreamWriter(f, StreamOptions{ImageOptions: ImageOptions{Size: m.size}, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	for j, w := range m.writes {
		p.mark("begin %d", j)
		if _, err := sw.Write(w.bytes()); err != nil {
			t.Fatal(err)
		}
	}
	p.mark("closing")
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	p.mark("closed")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := syncDir(dir); err != nil {
		t.Fatal(err)
	}
	p.mark("synced")
	p.mark("acked %d", len(m.writes)-1)
	f.Close()
	outcome := map[string]int{}
	powerCase(t, p, rnd, "create", 60, func(c *powerCut) error {
		path := filepath.Join(c.dir, "disk.vmdk")
		d, err := Open(path, Options{})
		if err != nil {
			if c.reached("synced") {
				return fmt.Errorf("open after Close and sync: %w", err)
			}
			outcome["refused by Open"]++
			return nil
		}
		defer d.Close()
		err = m.verify(d, len(m.writes)-1, len(m.writes)-1)
		if c.reached("synced") {
			if err != nil {
				return fmt.Errorf("after Close and sync: %w", err)
			}
			return checkNoCorruption(path)
		}
		switch {
		case err == nil:
			outcome["complete"]++
		case errors.Is(err, ErrCorrupt):
			outcome["refused by a read"]++
		case !c.reached("closing"):
			// No footer was written yet: nothing may open as a disk.
			return fmt.Errorf("a stream cut before Close opened and read: %w", err)
		default:
			outcome["read other bytes (Close not synced)"]++
		}
		return nil
	})
	t.Logf("cuts before the sync: %v", outcome)
}
