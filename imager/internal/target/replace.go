package target

import (
	"errors"
	"os"
	"syscall"
)

// Replacing an existing output (the same command run twice) cost three
// times a new one with -t unsafe: a rename over an existing file makes
// ext4 (auto_da_alloc, its default) write out the renamed file's delayed
// allocations inside rename(2), so a copy that asked for no flush waited
// for all of its data (measured: rename 0.9-1.4 s for 800 MiB, against
// 60 µs for a new name). Exchanging the two names (renameat2
// RENAME_EXCHANGE) does not trigger it, and is as atomic as the rename:
// the final name holds the old file or the new one, never neither; the
// old one, now under the temporary name, is removed after. A durable
// target's data is already on disk by then (fsync before the exchange),
// so the old output is never gone before the new one is complete.
//
// What stays is the removal of the old file itself: freeing its blocks
// costs what the filesystem makes it cost (on a volume mounted with
// -o discard, ext4 discards every freed block before unlink(2) returns:
// about 0.3 s per GiB here), as qemu-img's truncation of it does.

// dropCache is sysDropCache, called as a target over an existing output
// is opened (a test replaces it): under memory pressure the copy spent
// 5-7 s in pwrite(2) reclaiming pages for 800 MiB, against 0.6 s once the
// old output's cached gigabyte was dropped (as a new file's run, whose
// old output was removed before it, has it).
var dropCache = sysDropCache

// exchange is sysExchange (a test replaces it); errNoExchange: the
// filesystem or system cannot exchange names.
var exchange = sysExchange

var errNoExchange = errors.New("renameat2 RENAME_EXCHANGE not supported")

// replace moves the finished file tmp to final, replacing what is there.
func replace(tmp, final string) error {
	if fi, err := os.Lstat(final); err == nil && fi.Mode().IsRegular() {
		switch err := exchange(tmp, final); {
		case err == nil:
			// tmp is the old output now: a file (Unlink never removes a
			// directory that took final's place meanwhile). The new
			// output is in place: a failed removal must not fail it (the
			// caller would drop tmp's name and skip the directory's
			// sync); the old file, unlocked under a temporary name, is
			// removed as a stale attempt by the next target opened here.
			syscall.Unlink(tmp)
			return nil
		case !errors.Is(err, errNoExchange):
			return &os.LinkError{Op: "exchange", Old: tmp, New: final, Err: err}
		}
	}
	return os.Rename(tmp, final)
}
