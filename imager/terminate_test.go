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
