package vmdk

import (
	"context"
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"
)

// Power cuts during the operations that rewrite an existing chain: Commit,
// Rebase, and Check's repair (the recorder and model are in
// powerfs_test.go and powerloss_test.go).

// powerChain creates, through p, a monolithicSparse base.vmdk holding base
// writes and a child disk.vmdk of subformat sub on it holding child writes,
// all flushed: the state a Commit or Rebase starts from.
func powerChain(t *testing.T, p *powerFS, rnd *rand.Rand, dir string, sub Subformat) (base, child string, m *plModel) {
	t.Helper()
	return powerChainOn(t, p, rnd, dir, MonolithicSparse, sub)
}

// powerChainOn is powerChain with a base of subformat baseSub.
func powerChainOn(t *testing.T, p *powerFS, rnd *rand.Rand, dir string, baseSub, sub Subformat) (base, child string, m *plModel) {
	t.Helper()
	const size = 4 * plMiB
	base, child = filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "disk.vmdk")
	m = &plModel{size: size, windows: [][2]int64{{0, size}}}
	if err := Create(base, CreateOptions{Subformat: baseSub, ImageOptions: ImageOptions{Size: size}}); err != nil {
		t.Fatal(err)
	}
	m.base = m.randomWrites(rnd, 8, 1000)
	m.writeAll(t, p, base, m.base, 1000)
	if err := Create(child, CreateOptions{Subformat: sub, Backing: base}); err != nil {
		t.Fatal(err)
	}
	m.writes = m.randomWrites(rnd, 8, 0)
	m.writeAll(t, p, child, m.writes, 0)
	return base, child, m
}

// TestPowerLossCommit cuts power during Commit. The child must open at
// every cut and read exactly as before, or have its chain refused (never
// read a mix); the parent must open, every byte its old content or the
// child's, without corruption; once Commit returned, both read the
// committed content and the chain holds. Into a sparse parent (grains
// appended, tables) and a flat one (in place), from a child whose
// descriptor is embedded or a file of its own.
func TestPowerLossCommit(t *testing.T) {
	cases := []struct {
		name          string
		parent, child Subformat
	}{
		{"sparse into sparse", MonolithicSparse, MonolithicSparse},
		{"split sparse into flat", MonolithicFlat, TwoGbMaxExtentSparse},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { powerLossCommit(t, tc.parent, tc.child) })
	}
}

func powerLossCommit(t *testing.T, parentSub, childSub Subformat) {
	rnd := powerSeed(t)
	dir := t.TempDir()
	p := installPowerFS(t, dir)
	_, child, m := powerChainOn(t, p, rnd, dir, parentSub, childSub)
	p.mark("commit")
	if err := Commit(context.Background(), child, Options{}); err != nil {
		t.Fatal(err)
	}
	p.mark("committed")
	all := len(m.writes) - 1
	parentModel := &plModel{size: m.size, windows: m.windows, writes: append(append([]plWrite(nil), m.base...), m.writes...)}
	outcome := map[string]int{}
	powerCase(t, p, rnd, "commit", 40, func(c *powerCut) error {
		done, refused := c.reached("committed"), false
		cd, err := Open(filepath.Join(c.dir, "disk.vmdk"), Options{})
		if err != nil {
			return fmt.Errorf("child: %w", err)
		}
		defer cd.Close()
		switch err := cd.ChainError(); {
		case err != nil && done:
			return fmt.Errorf("child after Commit returned: %w", err)
		case err != nil:
			outcome["child's chain refused"]++
			refused = true
		default:
			if err := m.verify(cd, all, all); err != nil {
				return fmt.Errorf("child: %w", err)
			}
			outcome["child reads as before"]++
		}
		pd, err := Open(filepath.Join(c.dir, "base.vmdk"), Options{})
		if err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		defer pd.Close()
		// The parent: base writes acknowledged, the child's in flight until
		// Commit returned.
		acked := len(m.base) - 1
		if done {
			acked = len(parentModel.writes) - 1
		}
		if err := parentModel.verify(pd, acked, len(parentModel.writes)-1); err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		if err := checkNoCorruption(filepath.Join(c.dir, "base.vmdk")); err != nil {
			return err
		}
		if refused {
			// The cut fell between the parent's new CID and the child's
			// relink. Commit's error names the way out: rebase -u onto the
			// parent, then commit again.
			cd.Close()
			pd.Close()
			if err := recommit(c.dir, m); err != nil {
				return fmt.Errorf("recovering a refused chain: %w", err)
			}
		}
		return nil
	})
	t.Logf("cuts: %v", outcome)
}

// recommit relinks the child in dir to its parent with an unsafe rebase,
// checks it reads as before, commits it again and checks the parent then
// holds the committed content.
func recommit(dir string, m *plModel) error {
	child, base := filepath.Join(dir, "disk.vmdk"), filepath.Join(dir, "base.vmdk")
	if err := Rebase(context.Background(), child, base, RebaseOptions{Unsafe: true}); err != nil {
		return err
	}
	all := len(m.writes) - 1
	for _, step := range []string{"relinked", "committed"} {
		if step == "committed" {
			if err := Commit(context.Background(), child, Options{}); err != nil {
				return err
			}
		}
		d, err := Open(child, Options{})
		if err != nil {
			return err
		}
		err = d.ChainError()
		if err == nil {
			err = m.verify(d, all, all)
		}
		d.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
	}
	pd, err := Open(base, Options{})
	if err != nil {
		return err
	}
	defer pd.Close()
	both := &plModel{size: m.size, windows: m.windows, writes: append(append([]plWrite(nil), m.base...), m.writes...)}
	return both.verify(pd, len(both.writes)-1, len(both.writes)-1)
}

// TestPowerLossRebase cuts power during a safe Rebase of a child from
// base.vmdk onto a new backing that differs from base in its second half:
// a child with a descriptor file (rewritten by rename) and monolithicSparse
// children (descriptor rewritten in place; with a long new name the text
// after the hint moves across a sector). At every cut the child reads
// exactly as before (or its chain is refused); once Rebase
// returned, it names the new backing, its chain holds and it still reads
// the same.
func TestPowerLossRebase(t *testing.T) {
	cases := []struct {
		name string
		sub  Subformat
		nb   string
	}{
		{"descriptor file", TwoGbMaxExtentSparse, "new.vmdk"},
		{"embedded descriptor", MonolithicSparse, "new.vmdk"},
		{"embedded descriptor, long name", MonolithicSparse, "new-" + strings.Repeat("x", 200) + ".vmdk"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { powerLossRebase(t, tc.sub, tc.nb) })
	}
}

func powerLossRebase(t *testing.T, sub Subformat, newName string) {
	rnd := powerSeed(t)
	dir := t.TempDir()
	p := installPowerFS(t, dir)
	_, child, m := powerChain(t, p, rnd, dir, sub)
	nb := filepath.Join(dir, newName)
	if err := Create(nb, CreateOptions{Subformat: MonolithicFlat, ImageOptions: ImageOptions{Size: m.size}}); err != nil {
		t.Fatal(err)
	}
	m.writeAll(t, p, nb, append(append([]plWrite(nil), m.base...), plWrite{off: m.size / 2, n: m.size / 2, id: 2000}), 2000)
	p.mark("rebase")
	if err := Rebase(context.Background(), child, nb, RebaseOptions{}); err != nil {
		t.Fatal(err)
	}
	p.mark("rebased")
	all := len(m.writes) - 1
	outcome := map[string]int{}
	powerCase(t, p, rnd, "rebase", 40, func(c *powerCut) error {
		done := c.reached("rebased")
		path := filepath.Join(c.dir, "disk.vmdk")
		d, err := Open(path, Options{})
		if err != nil { // it was whole before: a torn descriptor is stuck
			return fmt.Errorf("child: %w", err)
		}
		defer d.Close()
		if err := d.ChainError(); err != nil {
			if done {
				return fmt.Errorf("after Rebase returned: %w", err)
			}
			outcome["chain refused"]++
			return nil
		}
		if done && d.ParentFileNameHint() != newName {
			return fmt.Errorf("after Rebase returned the child's parent is %q", d.ParentFileNameHint())
		}
		if err := m.verify(d, all, all); err != nil {
			return err
		}
		if d.ParentFileNameHint() == newName {
			outcome["reads as before on the new backing"]++
		} else {
			outcome["reads as before on the old backing"]++
		}
		return checkNoCorruption(path)
	})
	t.Logf("cuts: %v", outcome)
}

// TestPowerLossCheckRepair cuts power while Check repairs an image a
// writer died on (grains appended past the last one the tables know):
// every cut opens, reads what was acknowledged, and has no corruption;
// once the repair returned, the leak is gone for good.
func TestPowerLossCheckRepair(t *testing.T) {
	rnd := powerSeed(t)
	dir := t.TempDir()
	p := installPowerFS(t, dir)
	path := filepath.Join(dir, "disk.vmdk")
	m := &plModel{size: 4 * plMiB, windows: [][2]int64{{0, 4 * plMiB}}}
	if err := Create(path, CreateOptions{Subformat: MonolithicSparse, ImageOptions: ImageOptions{Size: m.size}}); err != nil {
		t.Fatal(err)
	}
	m.writes = m.randomWrites(rnd, 6, 0)
	m.writeAll(t, p, path, m.writes, 0)
	// The writer that dies: its grains reach the file, its tables never do.
	d := mustOpen(t, path, Options{ReadWrite: true})
	for _, w := range m.randomWrites(rnd, 4, len(m.writes)) {
		p.mark("begin %d", len(m.writes))
		m.writes = append(m.writes, w)
		if _, err := d.WriteAt(w.bytes(), w.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.sources[0].f.Sync(); err != nil { // as if the OS wrote them back
		t.Fatal(err)
	}
	for _, s := range d.sources {
		s.f.Close() // no Close: the tables stay unwritten
	}
	p.mark("repair")
	rep, err := Check(context.Background(), path, CheckOptions{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Repaired) == 0 || len(rep.Corruptions) != 0 {
		t.Fatalf("the dead writer left nothing to repair, or corruption: %+v", rep)
	}
	p.mark("repaired")
	acked, begun := 5, len(m.writes)-1
	powerCase(t, p, rnd, "repair", 40, func(c *powerCut) error {
		path := filepath.Join(c.dir, "disk.vmdk")
		d, err := Open(path, Options{})
		if err != nil {
			return err
		}
		defer d.Close()
		if err := m.verify(d, acked, begun); err != nil {
			return err
		}
		rep, err := Check(context.Background(), path, CheckOptions{})
		switch {
		case err != nil:
			return err
		case len(rep.Corruptions) != 0:
			return fmt.Errorf("corruptions %q", rep.Corruptions)
		case c.reached("repaired") && !rep.Clean():
			return fmt.Errorf("after the repair returned: leaks %q", rep.Leaks)
		}
		return nil
	})
}
