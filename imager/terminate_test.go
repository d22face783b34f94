package main

import (
	"fmt"
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
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("left behind: %v", entries)
	}
}

// slowSource is a 64 GiB monolithicFlat image in dir (descriptor and a
// sparse flat extent): a raw file's holes are skipped, but every byte of
// a flat extent is read as data, so copying or comparing it takes long
// enough to be interrupted.
func slowSource(t *testing.T, dir string) string {
	t.Helper()
	flat := filepath.Join(dir, "big-flat.vmdk")
	if err := os.WriteFile(flat, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(flat, 64<<30); err != nil {
		t.Fatal(err)
	}
	desc := filepath.Join(dir, "big.vmdk")
	text := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW %d FLAT \"big-flat.vmdk\" 0\n", 64<<30/512)
	if err := os.WriteFile(desc, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return desc
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
