package vmdk

import (
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
)

// powerFS is a hostFS that records, in order, every change the engine makes
// to the files of one directory, so that a test can rebuild what a power
// cut at any point could have left on the disk. Unlike kill -9 (which
// keeps the page cache), a power cut keeps only what was synced:
//
//   - a file's content is what its last Sync made durable, plus any subset
//     of the 512-byte sector pieces and truncates written since (applied in
//     their original order, so each sector holds one of its versions: the
//     disk tears writes at sector granularity and reorders freely);
//   - the directory (creates, renames, removes) is what its last fsync made
//     durable plus a prefix of the changes since: the journal keeps their
//     order, but a file created or renamed is durable only once its
//     directory has been synced.
//
// Files are written for real as well, so the engine reads back what it
// wrote while it runs.
type powerFS struct {
	dir string
	mu  sync.Mutex
	ops []powerOp
	ino map[string]int // name in dir -> inode, as of now
	n   int            // inodes made
	err error          // first misuse (a file in dir the recorder did not see created)
}

type powerOpKind uint8

const (
	opCreate   powerOpKind = iota // name -> new inode ino
	opWrite                       // ino: data at off
	opTruncate                    // ino: size off
	opSync                        // ino
	opRename                      // name -> name2
	opRemove                      // name
	opSyncDir
	opMark // a point the workload reached (mark)
)

type powerOp struct {
	kind        powerOpKind
	ino         int
	name, name2 string
	off         int64
	data        []byte
	mark        string
}

// installPowerFS makes every host file in the (empty) directory dir go
// through a new recorder until the test ends.
func installPowerFS(t *testing.T, dir string) *powerFS {
	t.Helper()
	p := &powerFS{dir: filepath.Clean(dir), ino: map[string]int{}}
	old := host
	host = p
	t.Cleanup(func() { host = old })
	return p
}

// mark records that the workload reached a point (a Flush returned, an
// image was created); powerCut checks see the marks before their powerCut point.
func (p *powerFS) mark(format string, a ...any) {
	p.record(powerOp{kind: opMark, mark: fmt.Sprintf(format, a...)})
}

func (p *powerFS) record(op powerOp) {
	p.mu.Lock()
	p.ops = append(p.ops, op)
	p.mu.Unlock()
}

// tracked returns the name of path inside p.dir, or "" for other paths.
func (p *powerFS) tracked(path string) string {
	if abs, err := filepath.Abs(path); err == nil && filepath.Dir(abs) == p.dir {
		return filepath.Base(abs)
	}
	return ""
}

func (p *powerFS) OpenFile(path string, flag int, perm fs.FileMode) (hostFile, error) {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, flag, perm)
	if err != nil {
		return nil, err
	}
	if abs, _ := filepath.Abs(path); abs == p.dir {
		return &powerFile{File: f, p: p, dir: true}, nil
	}
	name := p.tracked(path)
	if name == "" {
		return f, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ino, ok := p.ino[name]
	switch {
	case !ok && statErr != nil && flag&os.O_CREATE != 0:
		p.n++
		ino = p.n
		p.ino[name] = ino
		p.ops = append(p.ops, powerOp{kind: opCreate, ino: ino, name: name})
	case !ok:
		p.err = fmt.Errorf("%s existed before the recorder saw it created", path)
	}
	return &powerFile{File: f, p: p, ino: ino}, nil
}

func (p *powerFS) CreateTemp(dir, pattern string) (hostFile, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	name := p.tracked(f.Name())
	if name == "" {
		return f, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	p.ino[name] = p.n
	p.ops = append(p.ops, powerOp{kind: opCreate, ino: p.n, name: name})
	return &powerFile{File: f, p: p, ino: p.n}, nil
}

func (p *powerFS) Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	from, to := p.tracked(oldpath), p.tracked(newpath)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case from == "" && to == "":
		return nil // not ours (a check on a rebuilt cut)
	case from == "" || to == "":
		p.err = fmt.Errorf("rename %s to %s crosses the recorded directory", oldpath, newpath)
		return nil
	}
	p.ino[to] = p.ino[from]
	delete(p.ino, from)
	p.ops = append(p.ops, powerOp{kind: opRename, name: from, name2: to})
	return nil
}

func (p *powerFS) Remove(path string) error {
	if err := os.Remove(path); err != nil {
		return err
	}
	if name := p.tracked(path); name != "" {
		p.mu.Lock()
		delete(p.ino, name)
		p.ops = append(p.ops, powerOp{kind: opRemove, name: name})
		p.mu.Unlock()
	}
	return nil
}

// powerFile is a real file whose changes are recorded.
type powerFile struct {
	*os.File
	p   *powerFS
	ino int
	dir bool // the recorded directory itself, opened to be synced
}

func (f *powerFile) WriteAt(b []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(b, off)
	if n > 0 {
		f.p.record(powerOp{kind: opWrite, ino: f.ino, off: off, data: append([]byte(nil), b[:n]...)})
	}
	return n, err
}

func (f *powerFile) Write(b []byte) (int, error) {
	off, err := f.File.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	n, err := f.File.Write(b)
	if n > 0 {
		f.p.record(powerOp{kind: opWrite, ino: f.ino, off: off, data: append([]byte(nil), b[:n]...)})
	}
	return n, err
}

func (f *powerFile) Truncate(size int64) error {
	if err := f.File.Truncate(size); err != nil {
		return err
	}
	f.p.record(powerOp{kind: opTruncate, ino: f.ino, off: size})
	return nil
}

func (f *powerFile) Sync() error {
	if err := f.File.Sync(); err != nil {
		return err
	}
	if f.dir {
		f.p.record(powerOp{kind: opSyncDir})
	} else {
		f.p.record(powerOp{kind: opSync, ino: f.ino})
	}
	return nil
}

// powerContent is a file's bytes as sectors (absent ones are zeros, so holes in
// multi-GiB flat extents cost nothing). Sector slices are never changed in
// place: clones share them.
type powerContent struct {
	size    int64
	sectors map[int64][]byte
}

func (c *powerContent) clone() *powerContent {
	n := &powerContent{size: c.size, sectors: make(map[int64][]byte, len(c.sectors))}
	for k, v := range c.sectors {
		n.sectors[k] = v
	}
	return n
}

// powerPiece is one change a power cut keeps or drops as a whole: data inside
// one sector, or (trunc) a new size.
type powerPiece struct {
	trunc bool
	off   int64
	data  []byte
}

// splitPowerOp splits a recorded write or truncate at sector boundaries.
func splitPowerOp(op powerOp) []powerPiece {
	if op.kind == opTruncate {
		return []powerPiece{{trunc: true, off: op.off}}
	}
	var ps []powerPiece
	for b, off := op.data, op.off; len(b) > 0; {
		n := min(int64(len(b)), (off/SectorSize+1)*SectorSize-off)
		ps = append(ps, powerPiece{off: off, data: b[:n]})
		b, off = b[n:], off+n
	}
	return ps
}

func (c *powerContent) apply(pc powerPiece) {
	s := pc.off / SectorSize
	if pc.trunc {
		for k := range c.sectors {
			if k*SectorSize >= pc.off {
				delete(c.sectors, k)
			}
		}
		if old, ok := c.sectors[s]; ok && pc.off%SectorSize != 0 {
			n := make([]byte, SectorSize)
			copy(n, old[:pc.off%SectorSize])
			c.sectors[s] = n
		}
		c.size = pc.off
		return
	}
	n := make([]byte, SectorSize)
	copy(n, c.sectors[s])
	copy(n[pc.off%SectorSize:], pc.data)
	c.sectors[s] = n
	c.size = max(c.size, pc.off+int64(len(pc.data)))
}

func (c *powerContent) writeTo(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = f.Truncate(c.size)
	// Write runs of consecutive sectors with one call each: a cut of a
	// few MiB is then a handful of writes, not thousands.
	keys := make([]int64, 0, len(c.sectors))
	for k := range c.sectors {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	run := make([]byte, 0, min(int64(len(keys))*SectorSize, 8<<20))
	for i, k := range keys {
		run = append(run, c.sectors[k]...)
		if i+1 < len(keys) && keys[i+1] == k+1 && len(run) < 8<<20 {
			continue
		}
		start := (k + 1 - int64(len(run)/SectorSize)) * SectorSize
		if err == nil {
			_, err = f.WriteAt(run[:min(int64(len(run)), c.size-start)], start)
		}
		run = run[:0]
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// powerCut is what a power cut after some recorded operation left behind.
type powerCut struct {
	at    int      // index of the last operation before the cut
	marks []string // the workload's marks up to then
	dir   string   // the rebuilt files
	note  string   // how much of the unsynced state survived
}

func (c *powerCut) reached(mark string) bool {
	for _, m := range c.marks {
		if m == mark {
			return true
		}
	}
	return false
}

// powerState is the disk as a power cut would find it at one point of the
// replay: what is durable, and what is pending.
type powerState struct {
	durableDir map[string]int // name -> inode
	pendingDir []powerDirOp
	durable    map[int]*powerContent
	pending    map[int][]powerPiece
	marks      []string
}

// replay walks the recorded operations and, after about budget of those
// at or after the first mark named start (a random sample, and the end),
// rebuilds a power cut's leftovers in a fresh directory (random choices
// from rnd) and calls check on it. It returns how many cuts it checked.
func (p *powerFS) replay(t *testing.T, rnd *rand.Rand, start string, budget int, check func(c *powerCut)) int {
	t.Helper()
	if p.err != nil {
		t.Fatalf("recorder: %v", p.err)
	}
	pick := p.sample(rnd, start, budget)
	st := &powerState{durableDir: map[string]int{}, durable: map[int]*powerContent{}, pending: map[int][]powerPiece{}}
	checked := 0
	for i, op := range p.ops {
		switch op.kind {
		case opCreate:
			st.durable[op.ino] = &powerContent{sectors: map[int64][]byte{}}
			st.pendingDir = append(st.pendingDir, powerDirOp{kind: op.kind, ino: op.ino, name: op.name})
		case opRename, opRemove:
			st.pendingDir = append(st.pendingDir, powerDirOp{kind: op.kind, name: op.name, name2: op.name2})
		case opWrite, opTruncate:
			st.pending[op.ino] = append(st.pending[op.ino], splitPowerOp(op)...)
		case opSync:
			for _, pc := range st.pending[op.ino] {
				st.durable[op.ino].apply(pc)
			}
			delete(st.pending, op.ino)
		case opSyncDir:
			st.durableDir = applyPowerDir(st.durableDir, st.pendingDir, len(st.pendingDir))
			st.pendingDir = nil
		case opMark:
			st.marks = append(st.marks, op.mark)
		}
		for k := range pick[i] {
			c := &powerCut{at: i, marks: append([]string(nil), st.marks...), dir: t.TempDir()}
			// The end is cut once keeping nothing unsynced: what the
			// workload saw complete must be durable on its own.
			durableOnly := i == len(p.ops)-1 && k == 0
			c.note = fmt.Sprintf("cut after op %d/%d (%s), ", i, len(p.ops), op.kind) + st.cut(t, rnd, c.dir, durableOnly)
			check(c)
			os.RemoveAll(c.dir) // keep the disk use of a long replay flat
			checked++
		}
	}
	return checked
}

// cut writes into dir the files a power cut leaves: the durable state, a
// random prefix of the pending directory changes, and none, all or a
// random share of each file's pending pieces (none of either with
// durableOnly). It says what it kept.
func (st *powerState) cut(t *testing.T, rnd *rand.Rand, dir string, durableOnly bool) string {
	keepDir := rnd.Intn(len(st.pendingDir) + 1)
	var share float64
	switch rnd.Intn(4) {
	case 0:
	case 1:
		share = 1
	default:
		share = rnd.Float64()
	}
	if durableOnly {
		keepDir, share = 0, 0
	}
	kept, total := 0, 0
	files := applyPowerDir(st.durableDir, st.pendingDir, keepDir)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names) // rnd's choices must not depend on map order
	for _, name := range names {
		ino := files[name]
		img := st.durable[ino].clone()
		for _, pc := range st.pending[ino] {
			total++
			if share == 1 || rnd.Float64() < share {
				img.apply(pc)
				kept++
			}
		}
		if err := img.writeTo(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf("%d/%d directory changes and %d/%d unsynced pieces kept", keepDir, len(st.pendingDir), kept, total)
}

// powerDirOp is a directory change not yet made durable by a directory sync.
type powerDirOp struct {
	kind        powerOpKind // opCreate, opRename or opRemove
	ino         int
	name, name2 string
}

// applyPowerDir returns base with the first n of ops applied.
func applyPowerDir(base map[string]int, ops []powerDirOp, n int) map[string]int {
	d := make(map[string]int, len(base))
	for k, v := range base {
		d[k] = v
	}
	for _, op := range ops[:n] {
		switch op.kind {
		case opCreate:
			d[op.name] = op.ino
		case opRename:
			if ino, ok := d[op.name]; ok {
				d[op.name2] = ino
				delete(d, op.name)
			}
		case opRemove:
			delete(d, op.name)
		}
	}
	return d
}

func (k powerOpKind) String() string {
	return [...]string{"create", "write", "truncate", "sync", "rename", "remove", "dirsync", "mark"}[k]
}

// sample picks about budget powerCut points among the operations after the
// mark start, always including the last operation; with fewer operations
// than budget, each is cut several times (with different random choices).
func (p *powerFS) sample(rnd *rand.Rand, start string, budget int) map[int]int {
	var points []int
	started := false
	for i, op := range p.ops {
		if op.kind == opMark {
			started = started || op.mark == start
		} else if started {
			points = append(points, i)
		}
	}
	pick := map[int]int{}
	if len(points) == 0 {
		return pick
	}
	if len(points) <= budget {
		for _, i := range points {
			pick[i] = (budget + len(points) - 1) / len(points)
		}
	} else {
		for _, k := range rnd.Perm(len(points))[:budget] {
			pick[points[k]] = 1
		}
	}
	// Always just before each sync or directory sync, where the most is
	// pending (a descriptor rewritten in place, a table update), twice.
	for _, i := range points {
		if k := p.ops[i].kind; (k == opSync || k == opSyncDir) && i > 0 && p.ops[i-1].kind != opMark {
			pick[i-1] = max(pick[i-1], 2)
		}
	}
	// And after everything, marks included: the final state is checked
	// against what the workload saw complete.
	pick[len(p.ops)-1] = max(pick[len(p.ops)-1], 2)
	return pick
}
