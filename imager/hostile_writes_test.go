package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// The imager's write paths under hostile and broken input (issue 12):
// commit, rebase, write and check -r end in their exit code and one
// stderr line before the first byte, or leave images that read as before
// (and a re-run that completes).

var writesBound = bound{Time: 10 * time.Second, Mem: 30 << 20}

// runLean is runBounded under writesBound after handing the test
// process's free heap back to the OS: Go starts the child with vfork, so
// the child's peak RSS starts from this process's resident size, which
// the in-process imager runs before it (conversions to compare content)
// have grown.
func runLean(t *testing.T, stdin io.Reader, args ...string) boundedRun {
	t.Helper()
	debug.FreeOSMemory()
	return runBounded(t, writesBound, stdin, args...)
}

// dirFiles is every regular file under dir, by relative name.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, rerr := os.ReadFile(p)
			if rerr != nil {
				t.Fatal(rerr)
			}
			rel, _ := filepath.Rel(dir, p)
			out[rel] = b
		}
		return nil
	})
	return out
}

func unchanged(t *testing.T, dir string, before map[string][]byte) {
	t.Helper()
	after := dirFiles(t, dir)
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s changed", name)
		}
	}
}

// oneLine fails unless stderr is one line holding want.
func oneLine(t *testing.T, r boundedRun, want string) {
	t.Helper()
	if lines := strings.Count(strings.TrimSpace(r.Stderr), "\n") + 1; lines != 1 || !strings.Contains(r.Stderr, want) {
		t.Fatalf("stderr %q: want one line with %q", r.Stderr, want)
	}
}

// imagerChild runs imager as a child process, so the setup and checks of
// a case do not grow this process (whose size a vforked child's peak RSS
// starts from).
func imagerChild(args ...string) (int, string) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "IMAGER_TEST_MAIN=1")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), errb.String()
	} else if err != nil {
		return -1, err.Error()
	}
	return 0, errb.String()
}

func mustImager(t *testing.T, args ...string) {
	t.Helper()
	if code, errs := imagerChild(args...); code != 0 {
		t.Fatalf("imager %v: exit %d %s", args, code, errs)
	}
}

// guest is imager's own view of an image's content (convert to raw).
func guest(t *testing.T, args ...string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "guest.raw")
	mustImager(t, append(append([]string{"convert", "-O", "raw"}, args...), out)...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flatParent writes parent.vmdk in dir over two 512 KiB flat extents (the
// second's access given) and a sparse child.vmdk with data in both.
func flatParent(t *testing.T, dir, second, p2 string) (parent, child string) {
	t.Helper()
	parent, child = filepath.Join(dir, "parent.vmdk"), filepath.Join(dir, "child.vmdk")
	for _, f := range []string{"p1.raw", p2} {
		if err := os.WriteFile(filepath.Join(dir, f), bytes.Repeat([]byte{7}, 512<<10), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(parent, []byte(fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=0badc0de\nparentCID=ffffffff\ncreateType=\"custom\"\n\n"+
		"RW 1024 FLAT \"p1.raw\" 0\n%s 1024 FLAT %q 0\n", second, p2)), 0o644)
	mustImager(t, "create", "-q", "-b", parent, child)
	mustImager(t, "write", "-P", "5", "64k", "64k", child)
	mustImager(t, "write", "-P", "6", "640k", "64k", child)
	return parent, child
}

// grainEntry is the byte offset of grain 0's entry in the first grain
// table of the monolithicSparse image at path, and its redundant copy's.
func grainEntry(t *testing.T, path string) (gte, rgte int64, h *vmdk.SparseHeader) {
	t.Helper()
	d, err := vmdk.Open(path, vmdk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h = d.Header()
	d.Close()
	b, _ := os.ReadFile(path)
	gt := binary.LittleEndian.Uint32(b[h.GDOffset*512:])
	rgt := binary.LittleEndian.Uint32(b[h.RGDOffset*512:])
	return int64(gt) * 512, int64(rgt) * 512, h
}

func TestHostileWritesImager(t *testing.T) {
	cases := []struct {
		name string
		root bool // mounts and devices
		// run builds the case in dir and runs imager on it; it checks what
		// the case promises beyond the exit code and the stderr line.
		run    func(t *testing.T, dir string) boundedRun
		code   int
		stderr string
	}{
		{"rebase onto itself", false, func(t *testing.T, dir string) boundedRun {
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "1M")
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "top.vmdk")
			before := dirFiles(t, dir)
			r := runLean(t, nil, "rebase", "-b", filepath.Join(dir, "top.vmdk"), filepath.Join(dir, "top.vmdk"))
			unchanged(t, dir, before)
			return r
		}, jobapi.ExitPermanent, "cycle"},
		{"rebase -u onto its grandchild", false, func(t *testing.T, dir string) boundedRun {
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "1M")
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "mid.vmdk")
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk", "top.vmdk")
			before := dirFiles(t, dir)
			r := runLean(t, nil, "rebase", "-u", "-b", filepath.Join(dir, "top.vmdk"), filepath.Join(dir, "base.vmdk"))
			unchanged(t, dir, before)
			qemu(t, dir, "qemu-img", "info", "--backing-chain", "top.vmdk")
			return r
		}, jobapi.ExitPermanent, "cycle"},
		{"rebase -u repairs an existing cycle", false, func(t *testing.T, dir string) boundedRun {
			// Names of one length, so the hint can be swapped in place.
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "bbbb.vmdk", "1M")
			qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 1 0 64k", "bbbb.vmdk")
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "bbbb.vmdk", "-F", "vmdk", "cccc.vmdk")
			qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 3 128k 64k", "cccc.vmdk")
			want := rawOf(t, dir, "cccc.vmdk")
			child := filepath.Join(dir, "cccc.vmdk")
			b, _ := os.ReadFile(child)
			os.WriteFile(child, bytes.Replace(b, []byte(`parentFileNameHint="bbbb.vmdk"`), []byte(`parentFileNameHint="cccc.vmdk"`), 1), 0o644)
			if code, errs := imagerChild("info", child); code != jobapi.ExitPermanent || !strings.Contains(errs, "loops back") {
				t.Fatalf("info of a cycle: exit %d %s", code, errs)
			}
			r := runLean(t, nil, "rebase", "-u", "-b", filepath.Join(dir, "bbbb.vmdk"), child)
			if !bytes.Equal(guest(t, child), want) || !bytes.Equal(rawOf(t, dir, "cccc.vmdk"), want) {
				t.Fatal("the repaired image does not read as before the cycle")
			}
			return r
		}, jobapi.ExitOK, ""},
		{"commit into a RDONLY extent", false, func(t *testing.T, dir string) boundedRun {
			_, child := flatParent(t, dir, "RDONLY", "p2.raw")
			want := guest(t, child)
			before := dirFiles(t, dir)
			r := runLean(t, nil, "commit", child)
			unchanged(t, dir, before)
			if !bytes.Equal(guest(t, child), want) {
				t.Fatal("the child reads differently")
			}
			return r
		}, jobapi.ExitPermanent, "RDONLY"},
		{"commit into a parent on a read-only mount", true, func(t *testing.T, dir string) boundedRun {
			ro := filepath.Join(dir, "ro")
			os.Mkdir(ro, 0o755)
			if err := syscall.Mount("tmpfs", ro, "tmpfs", 0, "size=4M"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { syscall.Unmount(ro, syscall.MNT_DETACH) })
			qemu(t, ro, "qemu-img", "create", "-q", "-f", "vmdk", "parent.vmdk", "1M")
			child := filepath.Join(dir, "child.vmdk")
			mustImager(t, "create", "-q", "-b", filepath.Join(ro, "parent.vmdk"), child)
			mustImager(t, "write", "-P", "5", "0", "256k", child)
			if err := syscall.Mount("", ro, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
				t.Fatal(err)
			}
			want := guest(t, child)
			before := dirFiles(t, dir)
			r := runLean(t, nil, "commit", child)
			unchanged(t, dir, before)
			if !bytes.Equal(guest(t, child), want) {
				t.Fatal("the child reads differently")
			}
			return r
		}, jobapi.ExitPermanent, "read-only file system"},
		{"commit of an image on a read-only mount", true, func(t *testing.T, dir string) boundedRun {
			// The image's own descriptor must be rewritten at the end: an
			// image that cannot be is refused before the parent changes.
			ro := filepath.Join(dir, "ro")
			os.Mkdir(ro, 0o755)
			if err := syscall.Mount("tmpfs", ro, "tmpfs", 0, "size=4M"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { syscall.Unmount(ro, syscall.MNT_DETACH) })
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "parent.vmdk", "1M")
			child := filepath.Join(ro, "child.vmdk")
			mustImager(t, "create", "-q", "--root", dir, "-b", filepath.Join(dir, "parent.vmdk"), child)
			mustImager(t, "write", "--root", dir, "-P", "5", "0", "256k", child)
			if err := syscall.Mount("", ro, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
				t.Fatal(err)
			}
			want := guest(t, "--root", dir, child)
			before := dirFiles(t, dir)
			r := runLean(t, nil, "commit", "--root", dir, child)
			unchanged(t, dir, before)
			if !bytes.Equal(guest(t, "--root", dir, child), want) {
				t.Fatal("the child reads differently")
			}
			return r
		}, jobapi.ExitPermanent, "read-only file system"},
		{"commit into a parent on a full volume", true, func(t *testing.T, dir string) boundedRun {
			small := filepath.Join(dir, "small")
			os.Mkdir(small, 0o755)
			if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=2M"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { syscall.Unmount(small, syscall.MNT_DETACH) })
			qemu(t, small, "qemu-img", "create", "-q", "-f", "vmdk", "parent.vmdk", "8M")
			child := filepath.Join(dir, "child.vmdk")
			mustImager(t, "create", "-q", "-b", filepath.Join(small, "parent.vmdk"), child)
			mustImager(t, "write", "--random", "1", "0", "3M", child)
			want := guest(t, child)
			before := dirFiles(t, dir)
			r := runLean(t, nil, "commit", child)
			unchanged(t, dir, before)
			if !bytes.Equal(guest(t, child), want) {
				t.Fatal("the child reads differently")
			}
			return r
		}, jobapi.ExitTransient, "no space left on device"},
		{"commit into a parent on a failing device, then again once it is healed", true, func(t *testing.T, dir string) boundedRun {
			// The parent's flat extent is a loop device whose backing file
			// lives on a 2 MiB tmpfs: commit's flush fails with EIO after
			// the data is written, like a device whose storage went away.
			store := filepath.Join(dir, "store")
			os.Mkdir(store, 0o755)
			if err := syscall.Mount("tmpfs", store, "tmpfs", 0, "size=2M"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { syscall.Unmount(store, syscall.MNT_DETACH) })
			backing := filepath.Join(store, "backing")
			os.WriteFile(backing, nil, 0o644)
			os.Truncate(backing, 8<<20)
			dev := attachLoop(t, backing)
			parent, child := filepath.Join(dir, "parent.vmdk"), filepath.Join(dir, "child.vmdk")
			os.WriteFile(parent, []byte("# Disk DescriptorFile\nversion=1\nCID=0badc0de\nparentCID=ffffffff\ncreateType=\"custom\"\n\n"+
				"RW 16384 FLAT \""+dev+"\" 0\n"), 0o644)
			mustImager(t, "create", "-q", "--unsafe-paths", "-b", parent, child)
			mustImager(t, "write", "--unsafe-paths", "--random", "2", "0", "6M", child)
			want := guest(t, "--unsafe-paths", child)
			r := runLean(t, nil, "commit", "--unsafe-paths", child)
			if r.Code != jobapi.ExitTransient || !strings.Contains(r.Stderr, "running commit again completes it") {
				t.Fatalf("commit onto the failing device: exit %d %s", r.Code, r.Stderr)
			}
			if !bytes.Equal(guest(t, "--unsafe-paths", child), want) {
				t.Fatal("after the failed commit the child reads differently")
			}
			if err := syscall.Mount("", store, "", syscall.MS_REMOUNT, "size=16M"); err != nil {
				t.Fatal(err)
			}
			again := runLean(t, nil, "commit", "--unsafe-paths", child)
			if again.Code != 0 {
				t.Fatalf("commit again: exit %d %s", again.Code, again.Stderr)
			}
			if !bytes.Equal(guest(t, "--unsafe-paths", parent), want) || !bytes.Equal(guest(t, "--unsafe-paths", child), want) {
				t.Fatal("after commit again the parent or the child does not read the child's content")
			}
			return r
		}, jobapi.ExitTransient, "input/output error"},
		{"write through a grain table entry that points at the grain directory", false, func(t *testing.T, dir string) boundedRun {
			img := filepath.Join(dir, "s.vmdk")
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "s.vmdk", "1M")
			qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 1 0 64k", "s.vmdk")
			gte, rgte, h := grainEntry(t, img)
			f, _ := os.OpenFile(img, os.O_RDWR, 0)
			for _, at := range []int64{gte, rgte} {
				f.WriteAt(binary.LittleEndian.AppendUint32(nil, uint32(h.GDOffset)), at)
			}
			f.Close()
			before := dirFiles(t, dir)
			res := filepath.Join(t.TempDir(), "r.json")
			r := runLean(t, nil, "write", "--result-file", res, "0", "4k", img)
			unchanged(t, dir, before)
			b, _ := os.ReadFile(res)
			jr, err := jobapi.Parse(string(b))
			if err != nil || jr.Reason != jobapi.ReasonInvalidImage || !jr.Permanent {
				t.Fatalf("result %+v %v: want %s", jr, err, jobapi.ReasonInvalidImage)
			}
			return r
		}, jobapi.ExitPermanent, "grain directory"},
		{"check -r next to a flat extent in the same file", false, func(t *testing.T, dir string) boundedRun {
			s := filepath.Join(dir, "s.vmdk")
			qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "s.vmdk", "1M")
			qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 1 0 64k", "s.vmdk")
			fi, _ := os.Stat(s)
			tail := make([]byte, 8<<10)
			rand.New(rand.NewSource(3)).Read(tail)
			f, _ := os.OpenFile(s, os.O_RDWR|os.O_APPEND, 0)
			f.Write(tail)
			f.Close()
			img := filepath.Join(dir, "d.vmdk")
			os.WriteFile(img, []byte(fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=0badc0de\nparentCID=ffffffff\ncreateType=\"custom\"\n\n"+
				"RW 2048 SPARSE \"s.vmdk\"\nRW 16 FLAT \"s.vmdk\" %d\n", fi.Size()/512)), 0o644)
			want := guest(t, img)
			before := dirFiles(t, dir)
			r := runLean(t, nil, "check", "-r", img)
			unchanged(t, dir, before)
			if got := guest(t, img); !bytes.Equal(got, want) || !bytes.Equal(got[1<<20:], tail) {
				t.Fatal("the flat extent's content changed")
			}
			return r
		}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.root {
				needRoot(t)
			}
			r := c.run(t, t.TempDir())
			if r.Code != c.code {
				t.Fatalf("exit %d, want %d; stderr %s", r.Code, c.code, r.Stderr)
			}
			if c.stderr != "" {
				oneLine(t, r, c.stderr)
			}
		})
	}
}
