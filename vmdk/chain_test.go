package vmdk

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// TestRebaseHonoursContext: a safe rebase stopped by its context returns
// the context's error and leaves the image linked to its old backing.
func TestRebaseHonoursContext(t *testing.T) {
	dir := t.TempDir()
	base, other, child := filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "other.vmdk"), filepath.Join(dir, "child.vmdk")
	for _, p := range []string{base, other} {
		if err := Create(p, CreateOptions{ImageOptions: ImageOptions{Size: 1 << 20}}); err != nil {
			t.Fatal(err)
		}
	}
	b := mustOpen(t, base, Options{ReadWrite: true})
	if _, err := b.WriteAt([]byte("base"), 0); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := Create(child, CreateOptions{Backing: base}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Rebase(ctx, child, other, RebaseOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Rebase with a cancelled context: %v", err)
	}
	d := mustOpen(t, child, Options{})
	defer d.Close()
	if d.ParentFileNameHint() != "base.vmdk" || d.ChainError() != nil {
		t.Fatalf("after a cancelled rebase: parent %q, chain %v", d.ParentFileNameHint(), d.ChainError())
	}
	if err := Rebase(context.Background(), child, other, RebaseOptions{}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	d2 := mustOpen(t, child, Options{})
	defer d2.Close()
	if _, err := d2.ReadAt(buf, 0); err != nil || string(buf) != "base" || d2.ParentFileNameHint() != "other.vmdk" {
		t.Fatalf("after rebase: %q %v, parent %q", buf, err, d2.ParentFileNameHint())
	}
}
