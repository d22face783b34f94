package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestRawMatchesQemu: the -raw file is what qemu-img reads the chain as.
func TestRawMatchesQemu(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "expected.raw")
	if err := run(dir, "20M", 2, 5, raw, "disk", true, true); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "qemu.raw")
	cmd := exec.Command("qemu-img", "convert", "-f", "vmdk", "-O", "raw", filepath.Join(dir, "disk-000002.vmdk"), out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, msg)
	}
	want, _ := os.ReadFile(out)
	got, _ := os.ReadFile(raw)
	if len(want) != 20<<20 || !bytes.Equal(got, want) {
		t.Fatalf("expected raw (%d bytes) differs from qemu's (%d bytes)", len(got), len(want))
	}
	if _, err := os.Stat(filepath.Join(dir, "disk-000001-delta.vmdk")); err != nil {
		t.Fatalf("-vmfssparse: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"64M": 64 << 20, "1G": 1 << 30, "1536": 1536, "4k": 4096} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1M", "100", "1X", "M"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
