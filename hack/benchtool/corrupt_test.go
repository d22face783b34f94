package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFlipByte: exactly one byte changes, a data byte after the middle.
func TestFlipByte(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out.raw")
	want := make([]byte, 3<<20)
	copy(want[2<<20+5:], "data")
	copy(want[10:], "header")
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	off, err := flipByte(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var diff []int
	for i := range want {
		if got[i] != want[i] {
			diff = append(diff, i)
		}
	}
	if len(diff) != 1 || int64(diff[0]) != off || off != 2<<20+5 {
		t.Errorf("flipped at %d, bytes differing: %v; want only %d", off, diff, 2<<20+5)
	}
}

func TestOutputOf(t *testing.T) {
	for want, args := range map[string][]string{
		"out.raw":        {"convert", "-t", "unsafe", "-O", "raw", "mono.vmdk", "out.raw"},
		"d/disk.img":     {"import", "-t", "unsafe", "--target", "d", "http://x/s.vmdk"},
		"d/x.img":        {"import", "--target=d", "--target-name", "x.img", "http://x/s.vmdk"},
		"out-qemu.vmdk":  {"convert", "-f", "raw", "-O", "vmdk", "src.raw", "out-qemu.vmdk"},
		"out/target.raw": {"convert", "-O", "raw", "target", "out/target.raw"},
	} {
		if got := outputOf(args); got != want {
			t.Errorf("outputOf(%q) = %q, want %q", args, got, want)
		}
	}
}
