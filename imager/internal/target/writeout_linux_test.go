package target

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"testing"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// fileRangeCall is one sync_file_range a target made, with a checksum of
// what the file held in that range at the time.
type fileRangeCall struct {
	off, n int64
	flags  int
	crc    uint32
}

// recordFileRanges replaces sync_file_range for the test: every call is
// recorded (then made, or failed with fail's error when fail is set).
func recordFileRanges(t *testing.T, fail func(flags int) error) func() []fileRangeCall {
	t.Helper()
	var (
		mu    sync.Mutex
		calls []fileRangeCall
	)
	old := syncFileRange
	syncFileRange = func(fd int, off, n int64, flags int) error {
		// Read through a descriptor of its own: the target's may be
		// write-only.
		b := make([]byte, n)
		f, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			t.Error(err)
			return err
		}
		k, _ := f.ReadAt(b, off)
		f.Close()
		mu.Lock()
		calls = append(calls, fileRangeCall{off, n, flags, crc32.ChecksumIEEE(b[:k])})
		mu.Unlock()
		if fail != nil {
			if err := fail(flags); err != nil {
				return err
			}
		}
		return old(fd, off, n, flags)
	}
	t.Cleanup(func() { syncFileRange = old })
	return func() []fileRangeCall {
		mu.Lock()
		defer mu.Unlock()
		return append([]fileRangeCall(nil), calls...)
	}
}

// countFsyncs counts the fsyncs targets make during the test.
func countFsyncs(t *testing.T) func() int {
	var mu sync.Mutex
	n := 0
	old := syncFile
	syncFile = func(f *os.File) error {
		mu.Lock()
		n++
		mu.Unlock()
		return old(f)
	}
	t.Cleanup(func() { syncFile = old })
	return func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// countDirSyncs counts the directory fsyncs targets make during the test.
func countDirSyncs(t *testing.T) func() int {
	n := 0
	old := syncDir
	syncDir = func(dir string) error {
		n++
		return old(dir)
	}
	t.Cleanup(func() { syncDir = old })
	return func() int { return n }
}

// piece is a range a worker writes (data) or leaves a hole (Zero).
type piece struct {
	off, n int64
	data   []byte // nil: Zero
}

// scatteredPieces cuts [0, size) into pieces of 1 byte to 200 KiB, a
// quarter of them holes, in an order shuffled within windows of 32, as
// workers that take chunks in order finish them out of order.
func scatteredPieces(size int64, r *rand.Rand) (want []byte, pieces []piece) {
	want = make([]byte, size)
	for off := int64(0); off < size; {
		n := min(size-off, 1+r.Int64N(200<<10))
		p := piece{off: off, n: n}
		if r.IntN(4) != 0 {
			p.data = want[off : off+n]
			for i := range p.data {
				p.data[i] = byte(r.Uint32() | 1) // never zero: a hole reads otherwise
			}
		}
		pieces = append(pieces, p)
		off += n
	}
	for w := 0; w < len(pieces); w += 32 {
		win := pieces[w:min(w+32, len(pieces))]
		r.Shuffle(len(win), func(i, j int) { win[i], win[j] = win[j], win[i] })
	}
	return want, pieces
}

// writePieces writes the pieces into tg from four workers at once.
func writePieces(t *testing.T, tg Target, pieces []piece) {
	t.Helper()
	ch := make(chan piece)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for p := range ch {
				var err error
				if p.data == nil {
					err = tg.Zero(p.off, p.n)
				} else {
					_, err = tg.WriteAt(p.data, p.off)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for _, p := range pieces {
		ch <- p
	}
	close(ch)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// covers says whether the calls with flags, taken together, cover
// [0, to) with no gap.
func covers(calls []fileRangeCall, flags int, to int64) bool {
	var s []fileRangeCall
	for _, c := range calls {
		if c.flags == flags {
			s = append(s, c)
		}
	}
	sort.Slice(s, func(i, j int) bool { return s[i].off < s[j].off })
	end := int64(0)
	for _, c := range s {
		if c.off > end {
			return false
		}
		end = max(end, c.off+c.n)
	}
	return end >= to
}

// Progressive write-out is invisible to content: four workers writing
// unaligned pieces out of order (and leaving holes) give the exact bytes;
// every range handed to write-out or waited for already held its final
// bytes (the watermark never passes a write that has not returned); the
// write-out covers the file but its last steps; Finish still fsyncs.
func TestWriteOutConcurrentOutOfOrder(t *testing.T) {
	calls := recordFileRanges(t, nil)
	fsyncs := countFsyncs(t)
	size := int64(100<<20 + 12345)
	want, pieces := scatteredPieces(size, rand.New(rand.NewPCG(1, 2)))
	path := filepath.Join(t.TempDir(), "disk.img")
	tg, err := Open(path, size, Options{Format: Raw, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	writePieces(t, tg, pieces)
	if err := tg.Finish(size); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content differs (err %v)", err)
	}
	if n := fsyncs(); n != 1 {
		t.Fatalf("%d fsyncs at Finish, want 1", n)
	}
	cs := calls()
	for _, c := range cs {
		end := min(c.off+c.n, size)
		if crc32.ChecksumIEEE(want[c.off:end]) != c.crc {
			t.Fatalf("sync_file_range(%d, %d, %d) over bytes not all written yet", c.off, c.n, c.flags)
		}
	}
	if !covers(cs, syncStart, size-outKick) {
		t.Fatalf("write-out started over less than [0, %d): %v", size-outKick, cs)
	}
	if !covers(cs, syncWait, size-outKick-outLag-outWait) {
		t.Fatalf("write-out waited for less than [0, %d): %v", size-outKick-outLag-outWait, cs)
	}
}

// randomBytes is n bytes zlib cannot shrink.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// A streamOptimized file, written in order, is written out as it grows.
func TestWriteOutStream(t *testing.T) {
	calls := recordFileRanges(t, nil)
	size := int64(24 << 20)
	data := randomBytes(int(size), 3)
	path := filepath.Join(t.TempDir(), "disk.vmdk")
	tg, err := Open(path, size, Options{Format: VMDK, VMDK: vmdk.CreateOptions{Subformat: vmdk.StreamOptimized}, Level: 1, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += 1 << 20 {
		if _, err := tg.WriteAt(data[off:off+1<<20], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := tg.Finish(size); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cs := calls()
	if !covers(cs, syncStart, int64(len(file))-outKick-1<<20) {
		t.Fatalf("write-out of the %d-byte stream: %v", len(file), cs)
	}
	for _, c := range cs {
		if crc32.ChecksumIEEE(file[c.off:min(c.off+c.n, int64(len(file)))]) != c.crc {
			t.Fatalf("sync_file_range(%d, %d) over bytes not written yet", c.off, c.n)
		}
	}
	d, err := vmdk.Open(path, vmdk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make([]byte, size)
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the stream reads otherwise (err %v)", err)
	}
}

// -t unsafe is qemu-img's no-flush mode: no write-out, no fsync of the
// file or its directory, on any target; durable ones have all three (the
// hooks see them).
func TestWriteOutUnsafeNone(t *testing.T) {
	calls := recordFileRanges(t, nil)
	fsyncs := countFsyncs(t)
	dirSyncs := countDirSyncs(t)
	size := int64(40 << 20)
	data := randomBytes(int(size), 4)
	for _, sync := range []bool{false, true} {
		before, fsyncsBefore, dirsBefore := len(calls()), fsyncs(), dirSyncs()
		dir := t.TempDir()
		dev := filepath.Join(dir, "dev")
		if err := os.WriteFile(dev, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(dev, size); err != nil {
			t.Fatal(err)
		}
		for _, o := range []Options{
			{Format: Raw},
			{Block: true, Zero: ZeroSkip},
			{Format: VMDK, VMDK: vmdk.CreateOptions{Subformat: vmdk.StreamOptimized}, Level: 1},
		} {
			o.Sync = sync
			path := filepath.Join(dir, "out")
			if o.Block {
				path = dev
			}
			tg, err := Open(path, size, o)
			if err != nil {
				t.Fatal(err)
			}
			for off := int64(0); off < size; off += 4 << 20 {
				if _, err := tg.WriteAt(data[off:off+4<<20], off); err != nil {
					t.Fatal(err)
				}
			}
			if err := tg.Finish(size); err != nil {
				t.Fatal(err)
			}
			os.RemoveAll(filepath.Join(dir, "out"))
		}
		n, f, d := len(calls())-before, fsyncs()-fsyncsBefore, dirSyncs()-dirsBefore
		if !sync && (n != 0 || f != 0 || d != 0) {
			t.Fatalf("-t unsafe: %d sync_file_range calls, %d fsyncs, %d directory fsyncs", n, f, d)
		}
		// The device's is not renamed: two directory fsyncs.
		if sync && (n < 3 || f != 3 || d != 2) {
			t.Fatalf("durable: %d sync_file_range calls, %d fsyncs, %d directory fsyncs over three targets", n, f, d)
		}
	}
}

// A write-out error (EIO while waiting) fails the write that met it and
// every later one, and Finish, even though the fsync after it (which the
// wait robbed of the error) succeeds; nothing is left under the name.
func TestWriteOutErrorFailsFinish(t *testing.T) {
	recordFileRanges(t, func(flags int) error {
		if flags == syncWait {
			return syscall.EIO
		}
		return nil
	})
	path := filepath.Join(t.TempDir(), "disk.img")
	size := int64(outLag + outWait + outKick + 8)
	tg, err := Open(path, size, Options{Format: Raw, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tg.WriteAt([]byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	if err := tg.Zero(4, outLag+outWait+outKick); !errors.Is(err, syscall.EIO) {
		t.Fatalf("the write that met the write-out's EIO: %v", err)
	}
	if _, err := tg.WriteAt([]byte("more"), outLag+outWait+outKick+4); !errors.Is(err, syscall.EIO) {
		t.Fatalf("a later write: %v", err)
	}
	if err := tg.Finish(size); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Finish after a write-out EIO: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed target is there: %v", err)
	}
}

// A file without sync_file_range stops the write-out after one try and
// is written and synced as before.
func TestWriteOutUnsupported(t *testing.T) {
	calls := recordFileRanges(t, func(int) error { return errNoSyncFileRange })
	fsyncs := countFsyncs(t)
	path := filepath.Join(t.TempDir(), "disk.img")
	size := int64(1 << 30)
	tg, err := Open(path, size, Options{Format: Raw, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += outKick {
		if err := tg.Zero(off, outKick); err != nil {
			t.Fatal(err)
		}
	}
	if err := tg.Finish(size); err != nil {
		t.Fatal(err)
	}
	if n, f := len(calls()), fsyncs(); n != 1 || f != 1 {
		t.Fatalf("%d sync_file_range calls (want 1), %d fsyncs (want 1)", n, f)
	}
}

// The watermark follows scattered covered ranges, and gives up (rather
// than grow) past outMaxSpans of them.
func TestWriteOutWatermark(t *testing.T) {
	w := &writeOut{}
	for _, s := range []span{{10, 20}, {30, 40}, {20, 25}, {0, 5}, {5, 10}, {26, 31}} {
		w.add(s.start, s.end)
	}
	if w.mark != 25 || len(w.above) != 1 || w.above[0] != (span{26, 40}) {
		t.Fatalf("mark %d, above %v", w.mark, w.above)
	}
	w.add(25, 26)
	if w.mark != 40 || len(w.above) != 0 {
		t.Fatalf("mark %d, above %v", w.mark, w.above)
	}
	// A gap left behind (a hole without a Zero call) is passed over once
	// writes went outSkip past it, not before.
	w.add(50, outSkip+40)
	if w.mark != 40 || len(w.above) != 1 {
		t.Fatalf("mark %d, above %v", w.mark, w.above)
	}
	w.add(outSkip+41, outSkip+60)
	if w.mark != outSkip+40 || len(w.above) != 1 || w.above[0] != (span{outSkip + 41, outSkip + 60}) {
		t.Fatalf("mark %d, above %v", w.mark, w.above)
	}
	base := w.above[0].end + 1
	for i := range int64(outMaxSpans + 1) {
		w.add(base+2*i, base+1+2*i)
	}
	if !w.done || w.above != nil {
		t.Fatalf("%d spans kept", len(w.above))
	}
}

// The bookkeeping of a write: out-of-order 64 KiB writes, with the
// system calls made (here: nothing) every outKick.
func BenchmarkWriteOutWrote(b *testing.B) {
	old := syncFileRange
	syncFileRange = func(int, int64, int64, int) error { return nil }
	defer func() { syncFileRange = old }()
	f, err := os.CreateTemp(b.TempDir(), "out")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w := newWriteOut(f, true)
	const n = 64 << 10
	b.ReportAllocs()
	for i := range int64(b.N) {
		// Pairs swapped: each second write lands below the watermark's gap.
		j := i ^ 1
		if err := w.wrote(j*n, n); err != nil {
			b.Fatal(err)
		}
	}
}

// A writer that leaves holes without Zero calls still has its file
// written out as it goes, outSkip behind.
func TestWriteOutHolesWithoutZero(t *testing.T) {
	calls := recordFileRanges(t, nil)
	size := int64(300 << 20)
	data := randomBytes(64<<10, 6)
	path := filepath.Join(t.TempDir(), "disk.img")
	tg, err := Open(path, size, Options{Format: Raw, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; off += 4 << 20 {
		if _, err := tg.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := tg.Finish(size); err != nil {
		t.Fatal(err)
	}
	if to := size - outSkip - 4<<20 - outKick; !covers(calls(), syncStart, to) {
		t.Fatalf("write-out started over less than [0, %d): %v", to, calls())
	}
}

// TestWriteOutWaitErrorNeverUnsupported: a wait's EOPNOTSUPP or EINVAL is
// the file's write-back error (a device that refused a write: BLK_STS_NOTSUPP,
// BLK_STS_INVAL), which the wait consumes so the fsync at Finish returns 0;
// taken for "sync_file_range not supported" it would be dropped and a lost
// write reported as a finished disk (found by review).
func TestWriteOutWaitErrorNeverUnsupported(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EOPNOTSUPP, syscall.EINVAL} {
		old := syncFileRange
		syncFileRange = func(fd int, off, n int64, flags int) error {
			if flags == syncWait {
				return unsupportedError{errno} // what sysSyncFileRange makes of it
			}
			return old(fd, off, n, flags)
		}
		path := filepath.Join(t.TempDir(), "disk.img")
		size := int64(outLag + outWait + outKick + 8)
		tg, err := Open(path, size, Options{Format: Raw, Sync: true})
		if err != nil {
			syncFileRange = old
			t.Fatal(err)
		}
		tg.WriteAt([]byte("data"), 0)
		tg.Zero(4, outLag+outWait+outKick)
		ferr := tg.Finish(size)
		syncFileRange = old
		if !errors.Is(ferr, errno) || errors.Is(ferr, errNoSyncFileRange) {
			t.Errorf("a wait failing %v: Finish returned %v, want that errno and not \"unsupported\"", errno, ferr)
		}
		if _, err := os.Stat(path); err == nil {
			t.Errorf("a wait failing %v: the output was moved into place", errno)
		}
	}
}
