package main

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// Every command stops on SIGTERM through the root context, not only
// import: it exits 143 soon after, leaving no output behind.
func TestCommandsStopOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	big := slowSource(t, dir)
	for name, argv := range map[string][]string{
		"convert": {"convert", "-O", "raw", big, filepath.Join(dir, "out.img")},
		"compare": {"compare", big, big},
	} {
		cmd := imagerCmd(argv...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		start := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != jobapi.ExitTerminated {
			t.Fatalf("%s: exit %v", name, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("%s: took %v to stop", name, d)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}

// slowSource is a 64 GiB sparse image in dir of a few KiB whose every
// grain table entry points at one stored grain (of zeros): nothing is
// skipped as unallocated or a hole, so copying or comparing it reads 64
// GiB, long enough to be interrupted, and writes nothing.
func slowSource(t *testing.T, dir string) string {
	t.Helper()
	const grain, gtes, tables = 128, 512, 64 << 30 / (128 * 512 * 512)
	gt := int64(1 + tables*4/512)
	at := gt + gtes*4/512
	le := binary.LittleEndian
	img := make([]byte, (at+grain)*512)
	copy(img, "KDMV")
	le.PutUint32(img[4:], 1)
	le.PutUint32(img[8:], 1) // newline check
	le.PutUint64(img[12:], 64<<30/512)
	le.PutUint64(img[20:], grain)
	le.PutUint32(img[44:], gtes)
	le.PutUint64(img[56:], 1)
	le.PutUint64(img[64:], uint64(at))
	copy(img[73:], "\n \r\n")
	for i := range tables {
		le.PutUint32(img[512+4*i:], uint32(gt))
	}
	for i := range gtes {
		le.PutUint32(img[gt*512+int64(4*i):], uint32(at))
	}
	path := filepath.Join(dir, "big.vmdk")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// SIGINT (Ctrl-C) stops commands as SIGTERM does: exit 143, a Terminated
// result, and no partial disk left in the target or beside an output.
func TestStopOnSIGINT(t *testing.T) {
	f := getFixture(t)
	_, ts := newServer(t, f, func(s *server) { s.delay = 20 * time.Millisecond })
	dir := t.TempDir()
	res := filepath.Join(t.TempDir(), "r.json")
	big := slowSource(t, t.TempDir())
	out := t.TempDir()
	for name, argv := range map[string][]string{
		"import":  {"import", "--target", dir, "--result-file", res, "--progress-interval", "50ms", ts.URL + "/stream.vmdk"},
		"convert": {"convert", "-O", "raw", big, filepath.Join(out, "out.img")},
	} {
		cmd := imagerCmd(argv...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		start := time.Now()
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != jobapi.ExitTerminated {
			t.Fatalf("%s: exit %v", name, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("%s: took %v to stop", name, d)
		}
	}
	b, _ := os.ReadFile(res)
	if r, err := jobapi.Parse(string(b)); err != nil || r.Reason != jobapi.ReasonTerminated {
		t.Fatalf("result %s %v", b, err)
	}
	emptyDir(t, dir)
	emptyDir(t, out)
}
