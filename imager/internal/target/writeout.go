package target

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"
)

// A durable target's data must be on disk before Finish returns: its
// fsync. Left to the end, that fsync waits for all of it (about a second
// per GiB here) after a copy it could have overlapped. writeOut makes the
// write-out progressive: the prefix of the target that returned writes
// (and Zero calls: holes need no write-out) have covered, the watermark,
// is handed to the kernel in steps (sync_file_range WRITE: start writing,
// do not wait), and what lies outLag behind the watermark is waited for
// (WAIT_BEFORE|WRITE|WAIT_AFTER), which keeps what is dirty bounded and
// holds back a copy that runs faster than the disk.
//
// Durability never rests on it: sync_file_range writes neither metadata
// nor the disk's cache, so Finish's fsync stays as it was. Its errors
// are kept and fail the write and Finish: its wait consumes the file's
// write-back error, which that fsync would then no longer report.
//
// Writes come from several workers out of order, so the watermark only
// moves over ranges whose writes have returned: covered ranges above it
// are kept (at most outMaxSpans of them; a writer that scatters more
// loses the progressive write-out, never data) until the gap below them
// is filled. A gap that writes went on outSkip past is taken as a hole a
// caller left without Zero (the copy's workers are never more than a few
// chunks apart): at worst some pages are written out twice.

const (
	outKick     = 8 << 20  // start write-out each time the watermark moved this far
	outLag      = 64 << 20 // wait for what lies this far behind the watermark,
	outWait     = 16 << 20 // in steps of this much
	outMaxSpans = 4096
	outSkip     = 2 * outLag // a gap covered this far past is a hole
)

// sync_file_range's flags (the same on every Linux architecture).
const (
	syncWaitBefore = 1
	syncWrite      = 2
	syncWaitAfter  = 4
	syncStart      = syncWrite
	syncWait       = syncWaitBefore | syncWrite | syncWaitAfter
)

// syncFileRange is sync_file_range(2) (a test replaces it);
// errNoSyncFileRange: the file or system does not have it.
var syncFileRange = sysSyncFileRange

var errNoSyncFileRange = errors.New("sync_file_range not supported")

// syncFile is the fsync a durable target's Finish makes (a test counts
// them): what makes it durable, whatever the write-out did.
var syncFile = (*os.File).Sync

// syncDir is the directory's fsync after a durable target's rename (a
// test counts them).
var syncDir = SyncDir

type span struct{ start, end int64 }

// writeOut is the progressive write-out of one file; nil does nothing
// (a target not asked to be durable).
type writeOut struct {
	f *os.File

	mu     sync.Mutex
	mark   int64  // every byte below is covered
	above  []span // covered ranges above mark: sorted, disjoint, not touching
	kicked int64  // write-out started below
	waited int64  // waited for below
	done   bool   // stopped, unsupported, or too scattered to follow
	err    error  // the first write-out error
}

// newWriteOut follows f's writes when sync is asked.
func newWriteOut(f *os.File, sync bool) *writeOut {
	if !sync {
		return nil
	}
	return &writeOut{f: f}
}

// wrote records that [off, off+n) is covered: written (the write
// returned) or a hole. It starts and waits for the write-out the
// watermark's move calls for; an error of that write-out is returned,
// now and by every later call.
func (w *writeOut) wrote(off, n int64) error {
	if w == nil || n <= 0 {
		return nil
	}
	w.mu.Lock()
	if w.err != nil || w.done {
		err := w.err
		w.mu.Unlock()
		return err
	}
	w.add(off, off+n)
	var kick, wait span
	if w.mark-w.kicked >= outKick {
		kick = span{w.kicked, w.mark}
		w.kicked = w.mark
	}
	if to := w.kicked - outLag; to-w.waited >= outWait {
		wait = span{w.waited, to}
		w.waited = to
	}
	w.mu.Unlock()
	// Outside the lock: a wait blocks this writer only.
	var err error
	if kick.end > kick.start {
		err = w.sync(kick, syncStart)
	}
	if err == nil && wait.end > wait.start {
		err = w.sync(wait, syncWait)
	}
	return w.fail(err)
}

// add covers [a, b) and moves the watermark over what is now contiguous.
func (w *writeOut) add(a, b int64) {
	if w.done || b <= w.mark {
		return
	}
	// The first span that ends at or after a may touch or overlap [a, b).
	i := sort.Search(len(w.above), func(i int) bool { return w.above[i].end >= a })
	j := i
	for j < len(w.above) && w.above[j].start <= b {
		a, b = min(a, w.above[j].start), max(b, w.above[j].end)
		j++
	}
	if a <= w.mark {
		w.mark = b
		w.above = append(w.above[:0], w.above[j:]...) // i is 0 here
		return
	}
	if j == i && len(w.above) >= outMaxSpans {
		w.done, w.above = true, nil // no more watermark; Finish's fsync does it all
		return
	}
	w.above = slices.Replace(w.above, i, j, span{a, b})
	k := 0
	for k < len(w.above) && w.above[len(w.above)-1].end-w.mark > outSkip {
		w.mark = w.above[k].end
		k++
	}
	w.above = append(w.above[:0], w.above[k:]...)
}

func (w *writeOut) sync(s span, flags int) error {
	c, err := w.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := c.Control(func(fd uintptr) { serr = syncFileRange(int(fd), s.start, s.end-s.start, flags) }); err != nil {
		return err
	}
	waited := flags&(syncWaitBefore|syncWaitAfter) != 0
	if serr == nil || errors.Is(serr, errNoSyncFileRange) && !waited {
		return serr
	}
	// Only a start (no wait) can mean "not supported": the first call on
	// a file is one, so support is known before any wait. A wait returns
	// the file's write-back error, and consumes it, so the fsync at Finish
	// would not see it: whatever its errno, it must fail the write.
	var u unsupportedError
	if errors.As(serr, &u) {
		serr = u.errno
	}
	what := "start the write-out"
	if waited {
		what = "wait for the write-out"
	}
	return fmt.Errorf("%s: %s of bytes [%d, %d): %w", w.f.Name(), what, s.start, s.end, serr)
}

// unsupportedError is errNoSyncFileRange with the errno that said so.
type unsupportedError struct{ errno error }

func (e unsupportedError) Error() string   { return errNoSyncFileRange.Error() + ": " + e.errno.Error() }
func (e unsupportedError) Is(t error) bool { return t == errNoSyncFileRange }

// fail keeps the first error (write-out not supported just stops it) and
// returns what the writer is to see.
func (w *writeOut) fail(err error) error {
	if err == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if errors.Is(err, errNoSyncFileRange) {
		w.done = true
		return w.err
	}
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// stop ends the write-out before the file is synced and closed: no call
// touches the file after it. It returns the first write-out error, which
// fails Finish even where the fsync that follows succeeds.
func (w *writeOut) stop() error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done, w.above = true, nil
	return w.err
}
