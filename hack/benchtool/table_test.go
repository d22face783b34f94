package main

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in          []float64
		med, lo, hi float64
	}{
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
		{[]float64{9, 0.5, 0.7, 0.6, 0.4}, 0.6, 0.4, 9},
		{[]float64{2}, 2, 2, 2},
	} {
		in := append([]float64(nil), c.in...)
		med, lo, hi := median(c.in)
		if med != c.med || lo != c.lo || hi != c.hi {
			t.Errorf("median(%v) = %v %v %v, want %v %v %v", in, med, lo, hi, c.med, c.lo, c.hi)
		}
		if !slicesEqual(c.in, in) {
			t.Errorf("median reordered its input: %v", c.in)
		}
	}
	if m, _, _ := median(nil); !math.IsNaN(m) {
		t.Errorf("median of nothing = %v, want NaN", m)
	}
}

func slicesEqual(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func parse(t *testing.T, recs string) *samples {
	t.Helper()
	s := &samples{byName: map[string]*row{}}
	if err := parseSamples(s, "test", strings.NewReader(recs)); err != nil {
		t.Fatal(err)
	}
	return s
}

// runs makes run records of one row and tool.
func runs(row, tool string, kib string, secs ...string) string {
	var b strings.Builder
	for _, s := range secs {
		b.WriteString("run\t" + row + "\t" + tool + "\t" + s + "\t" + kib + "\n")
	}
	return b.String()
}

// TestVerdict: each target is met at its bound and unmet past it, and
// from medians: one fast run of five does not meet a ratio.
func TestVerdict(t *testing.T) {
	for _, c := range []struct {
		name, recs string
		met        bool
	}{
		{"ratio met at its bound", "target\tr\tratio\t2\n" + runs("r", "qemu", "100", "2", "2", "2") + runs("r", "imager", "100", "1", "1", "1"), true},
		{"ratio unmet", "target\tr\tratio\t2\n" + runs("r", "qemu", "100", "2", "2", "2") + runs("r", "imager", "100", "1.1", "1.1", "1.1"), false},
		{"best run is not the median", "target\tr\tratio\t2\n" + runs("r", "qemu", "100", "2", "2", "2", "2", "2") + runs("r", "imager", "100", "0.5", "1.5", "1.5", "1.5", "1.5"), false},
		{"ratio without qemu runs", "target\tr\tratio\t1\n" + runs("r", "imager", "100", "1"), false},
		{"size met", "target\tr\tsize\t1.01\nsize\tr\t1010\t1000\n" + runs("r", "imager", "100", "1"), true},
		{"size unmet", "target\tr\tsize\t1.01\nsize\tr\t1011\t1000\n" + runs("r", "imager", "100", "1"), false},
		{"size never recorded", "target\tr\tsize\t1.01\n" + runs("r", "imager", "100", "1"), false},
		{"overwrite as fresh", "target\tr\tfresh\t1.05\n" + runs("r", "imager", "100", "1.05", "1.05", "1.05") + runs("r", "imager-fresh", "100", "1", "1", "1"), true},
		{"overwrite slower", "target\tr\tfresh\t1.05\n" + runs("r", "imager", "100", "1.06", "1.06", "1.06") + runs("r", "imager-fresh", "100", "1", "1", "1"), false},
		{"RSS at 64 MiB", runs("r", "imager", "65536", "1"), true},
		{"RSS over 64 MiB in one run", runs("r", "imager", "100", "1") + runs("r", "imager", "65537", "1") + runs("r", "imager", "100", "1"), false},
		{"qemu's RSS is not bounded", runs("r", "imager", "100", "1") + runs("r", "qemu", "900000", "1"), true},
	} {
		s := parse(t, c.recs)
		if len(s.rows) != 1 {
			t.Fatalf("%s: %d rows", c.name, len(s.rows))
		}
		_, unmet := s.rows[0].verdict(64)
		if met := len(unmet) == 0; met != c.met {
			t.Errorf("%s: met %v (%v), want %v", c.name, met, unmet, c.met)
		}
	}
}

// TestParseRefuses: a garbled record fails the table, naming its line.
func TestParseRefuses(t *testing.T) {
	for _, recs := range []string{
		"run\tr\timager\t1\n",                 // a field short
		"run\tr\timager\tone\t100\n",          // not seconds
		"run\tr\timager\t-1\t100\n",           // negative
		"run\tr\timager\tNaN\t100\n",          // not a number
		"target\tr\tspeed\t2\n",               // unknown target
		"target\tr\tratio\t0\n",               // no target
		"size\tr\t0\t100\n",                   // no size
		"bogus\tr\n",                          // unknown record
		"run\tr\timager\t1\t100\textra\n",     // a field long
		"header\ta\nrun\tr\timager\t1\t1.5\n", // fractional KiB
	} {
		s := &samples{byName: map[string]*row{}}
		err := parseSamples(s, "f", strings.NewReader(recs))
		if err == nil || !strings.Contains(err.Error(), "f:") {
			t.Errorf("%q: error %v, want one naming the line", recs, err)
		}
	}
}

// TestTableStrict: -strict fails exactly when a row is unmet, and the
// table says QUICK for a smoke test.
func TestTableStrict(t *testing.T) {
	dir := t.TempDir()
	write := func(name, recs string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(recs), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "header\th\nsize\tr\t1017\t1000\ntarget\tr\tratio\t2\n"+runs("r", "qemu", "10", "3", "3", "3", "3", "3")+runs("r", "imager", "10", "1", "1", "1", "1", "1"))
	bad := write("bad", "quick\t1\ntarget\tq\tratio\t2\n"+runs("q", "qemu", "10", "1")+runs("q", "imager", "10", "1"))
	var out bytes.Buffer
	if err := tableMain([]string{"-strict", good}, &out); err != nil {
		t.Fatalf("met table: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "3.00x") || !strings.Contains(out.String(), "MET") || strings.Contains(out.String(), "QUICK") ||
		!strings.Contains(out.String(), "r: output size imager 1017 bytes, qemu-img 1000 bytes: 1.0170x") {
		t.Errorf("met table:\n%s", out.String())
	}
	out.Reset()
	if err := tableMain([]string{"-strict", good, bad}, &out); !errors.Is(err, errUnmet) {
		t.Errorf("unmet table under -strict: %v, want errUnmet\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "QUICK: not a measurement") || !strings.Contains(out.String(), "NOT MET") {
		t.Errorf("unmet quick table:\n%s", out.String())
	}
	out.Reset()
	if err := tableMain([]string{good, bad}, &out); err != nil {
		t.Errorf("unmet table without -strict: %v", err)
	}
}
