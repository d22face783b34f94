package main

import (
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
	big := filepath.Join(dir, "big.img") // sparse: every byte is read as data
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 64<<30); err != nil {
		t.Fatal(err)
	}
	for name, argv := range map[string][]string{
		"convert": {"convert", "-f", "raw", "-O", "raw", big, filepath.Join(dir, "out.img")},
		"compare": {"compare", "-f", "raw", "-F", "raw", big, big},
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

// SIGINT (Ctrl-C) stops commands as SIGTERM does: exit 143, a Terminated
// result, and no partial disk left in the target or beside an output.
func TestStopOnSIGINT(t *testing.T) {
	f := getFixture(t)
	_, ts := newServer(t, f, func(s *server) { s.delay = 20 * time.Millisecond })
	dir := t.TempDir()
	res := filepath.Join(t.TempDir(), "r.json")
	big := filepath.Join(t.TempDir(), "big.img")
	os.WriteFile(big, nil, 0o644)
	os.Truncate(big, 64<<30)
	out := t.TempDir()
	for name, argv := range map[string][]string{
		"import":  {"import", "--target", dir, "--result-file", res, "--progress-interval", "50ms", ts.URL + "/stream.vmdk"},
		"convert": {"convert", "-f", "raw", "-O", "raw", big, filepath.Join(out, "out.img")},
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
