package target

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A raw file appears under its name only once finished, cut to size; an
// aborted one leaves nothing.
func TestRawFileAppearsWhenFinished(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	tg, err := Open(path, 1<<20, Options{Format: Raw})
	if err != nil {
		t.Fatal(err)
	}
	tg.WriteAt([]byte("data"), 512)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("visible before Finish: %v", err)
	}
	if err := tg.Finish(1 << 20); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 1<<20 {
		t.Fatalf("finished: %v %v", fi, err)
	}
	tg, err = Open(filepath.Join(dir, "other.img"), 1<<20, Options{Format: Raw})
	if err != nil {
		t.Fatal(err)
	}
	tg.Abort()
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}
}

// A disk far larger than the volume is refused before anything is written.
func TestFitsCheck(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(filepath.Join(dir, "disk.img"), 1<<49, Options{Format: Raw, Fits: true, Overhead: 0.06})
	var small *TooSmallError
	if !errors.As(err, &small) {
		t.Fatalf("got %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

func TestMarkOpen(t *testing.T) {
	var te *Error
	if err := MarkOpen(Mark(os.ErrClosed)); !errors.As(err, &te) || !te.Open {
		t.Fatalf("%#v", err)
	}
	if Mark(nil) != nil || MarkOpen(nil) != nil {
		t.Fatal("nil marked")
	}
}
