package target

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"unsafe"

	"github.com/vmdkpop/vmdkpop/vmdk"
	"golang.org/x/sys/unix"
)

// countExchanges counts the name exchanges replace makes; fail, when
// set, is what each returns instead of exchanging.
func countExchanges(t *testing.T, fail error) func() int {
	n := 0
	old := exchange
	exchange = func(a, b string) error {
		n++
		if fail != nil {
			return fail
		}
		return old(a, b)
	}
	t.Cleanup(func() { exchange = old })
	return func() int { return n }
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, e := range entries {
		s = append(s, e.Name())
	}
	sort.Strings(s)
	return s
}

// oldOutput puts a previous run's output at dir/disk.img.
func oldOutput(t *testing.T) (dir, path string, old []byte) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "disk.img")
	old = bytes.Repeat([]byte("old output "), 100000)
	if err := os.WriteFile(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, path, old
}

// An output that exists already is replaced by exchanging names (a rename
// over it would make ext4 write the new file out inside rename(2), even
// with -t unsafe), in both cache modes; the old one is gone after, and no
// temporary is left.
func TestOverwriteExchanges(t *testing.T) {
	exchanges := countExchanges(t, nil)
	for _, sync := range []bool{false, true} {
		before := exchanges()
		dir, path, _ := oldOutput(t)
		size := int64(3 << 20)
		data := randomBytes(int(size), 5)
		tg, err := Open(path, size, Options{Format: Raw, Sync: sync})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tg.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if err := tg.Finish(size); err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("sync %v: the output is not the new one (err %v)", sync, err)
		}
		if n := names(t, dir); len(n) != 1 {
			t.Fatalf("sync %v: left in the directory: %v", sync, n)
		}
		if n := exchanges() - before; n != 1 {
			t.Fatalf("sync %v: %d exchanges, want 1", sync, n)
		}
	}
}

// A VMDK over an existing one is moved in the same way, file by file.
func TestOverwriteVMDK(t *testing.T) {
	exchanges := countExchanges(t, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.vmdk")
	size := int64(4 << 20)
	for run, sub := range []vmdk.Subformat{vmdk.MonolithicSparse, vmdk.StreamOptimized, vmdk.MonolithicSparse} {
		data := randomBytes(1<<20, uint64(10+run))
		tg, err := Open(path, size, Options{Format: VMDK, VMDK: vmdk.CreateOptions{Subformat: sub}, Sync: run == 2})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tg.WriteAt(data, 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := tg.Finish(size); err != nil {
			t.Fatal(err)
		}
		d, err := vmdk.Open(path, vmdk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data))
		_, err = d.ReadAt(got, 1<<20)
		d.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("run %d: the image reads otherwise (err %v)", run, err)
		}
		if n := names(t, dir); len(n) != 1 {
			t.Fatalf("run %d: left in the directory: %v", run, n)
		}
		if n := exchanges(); n != run {
			t.Fatalf("run %d: %d exchanges, want %d", run, n, run)
		}
	}
}

// Where names cannot be exchanged, the new output is renamed over the
// old one, as before.
func TestOverwriteWithoutExchange(t *testing.T) {
	exchanges := countExchanges(t, errNoExchange)
	dir, path, _ := oldOutput(t)
	tg, err := Open(path, 1<<20, Options{Format: Raw})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tg.WriteAt([]byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	if err := tg.Finish(1 << 20); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); len(got) != 1<<20 || string(got[:3]) != "new" {
		t.Fatalf("the output is not the new one: %q...", got[:min(len(got), 16)])
	}
	if n := names(t, dir); len(n) != 1 || exchanges() != 1 {
		t.Fatalf("left in the directory: %v (%d exchanges tried)", n, exchanges())
	}
}

// A copy that fails midway, or a durable Finish that fails (here the
// write-out's EIO), leaves the previous output as it was and nothing
// else; so does a directory in the output's place.
func TestOverwriteFailedKeepsOld(t *testing.T) {
	recordFileRanges(t, func(flags int) error {
		if flags == syncWait {
			return syscall.EIO
		}
		return nil
	})
	for _, fail := range []string{"abort", "finish"} {
		dir, path, old := oldOutput(t)
		size := int64(outLag + outWait + outKick + 4)
		tg, err := Open(path, size, Options{Format: Raw, Sync: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tg.WriteAt([]byte("new"), 0); err != nil {
			t.Fatal(err)
		}
		if fail == "abort" {
			tg.Abort()
		} else {
			tg.Zero(3, size-3) // meets the EIO
			if err := tg.Finish(size); !errors.Is(err, syscall.EIO) {
				t.Fatalf("Finish: %v", err)
			}
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, old) {
			t.Fatalf("%s: the old output is not as it was (err %v)", fail, err)
		}
		if n := names(t, dir); len(n) != 1 {
			t.Fatalf("%s: left in the directory: %v", fail, n)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	if err := os.MkdirAll(filepath.Join(path, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	tg, err := Open(path, 1<<20, Options{Format: Raw})
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.Finish(1 << 20); err == nil {
		t.Fatal("a file replaced a directory")
	}
	if fi, err := os.Stat(filepath.Join(path, "inside")); err != nil || !fi.IsDir() {
		t.Fatalf("the directory: %v %v", fi, err)
	}
	if n := names(t, dir); len(n) != 1 {
		t.Fatalf("left in the directory: %v", n)
	}
}

// resident is how many of path's pages are in the page cache.
func resident(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// Opening a target over an output on disk drops the old output's cached
// pages (they would hold memory the copy needs until Finish removes
// them); an old output still waiting for write-out keeps them (dropping
// would write it out first), as does one FIEMAP cannot see through. Either
// way the old output is intact.
func TestOverwriteDropsOldCache(t *testing.T) {
	for _, synced := range []bool{true, false} {
		dir := t.TempDir()
		path := filepath.Join(dir, "disk.img")
		old := randomBytes(16<<20, 7)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(old); err != nil {
			t.Fatal(err)
		}
		if synced {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		pending, ok := delalloc(f)
		f.Close()
		if synced && pending {
			t.Fatal("a synced file reads as waiting for write-out")
		}
		var st unix.Statfs_t
		if !synced && !pending && unix.Statfs(dir, &st) == nil && st.Type == unix.EXT4_SUPER_MAGIC {
			t.Fatal("an ext4 file just written (delayed allocation) does not read as waiting for write-out")
		}
		os.ReadFile(path) // all cached
		before := resident(t, path)
		tg, err := Open(path, 1<<20, Options{Format: Raw, Sync: true})
		if err != nil {
			t.Fatal(err)
		}
		after := resident(t, path)
		if !synced && ok {
			// Not written out by Open (POSIX_FADV_DONTNEED would have).
			g, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			still, _ := delalloc(g)
			g.Close()
			if pending && !still {
				t.Fatal("Open wrote out the old output")
			}
		}
		tg.Abort()
		drop := synced && ok
		if drop && after > before/8 || !drop && after < before {
			t.Fatalf("synced %v (FIEMAP %v, pending %v): %d of the old output's pages cached before Open, %d after", synced, ok, pending, before, after)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, old) {
			t.Fatalf("the old output changed (err %v)", err)
		}
	}
}

// Once the names are exchanged the new output is in place: an old output
// that cannot be removed after (here a directory took its temporary name)
// must not fail the target, which would drop the name and skip the
// directory's sync of a finished output (found by review).
func TestOverwriteRemovalFailureKeepsNew(t *testing.T) {
	old := exchange
	exchange = func(a, b string) error {
		if err := old(a, b); err != nil {
			return err
		}
		// a now names the old output: move it aside, leave a directory.
		if err := os.Rename(a, a+".old"); err != nil {
			return err
		}
		return os.Mkdir(a, 0o755)
	}
	t.Cleanup(func() { exchange = old })
	_, path, _ := oldOutput(t)
	size := int64(1 << 20)
	data := randomBytes(int(size), 7)
	tg, err := Open(path, size, Options{Format: Raw, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tg.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := tg.Finish(size); err != nil {
		t.Fatalf("Finish after the exchange, the old output not removable: %v", err)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the new output is not in place (%v)", err)
	}
}
