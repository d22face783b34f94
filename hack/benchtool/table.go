package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// The samples file: one record a line, fields separated by tabs (row
// names hold spaces). The scripts append every timed run as it finishes,
// so the table is computed from every run there was, never a chosen one.
//
//	header TEXT                   a line of the table's header
//	quick  1                      the runs were a smoke test, not a measurement
//	run    ROW TOOL SECS KIB      one timed run: wall seconds and peak RSS
//	target ROW ratio MIN          qemu-img's median / imager's must be >= MIN
//	target ROW size MAX           imager's output size / qemu-img's must be <= MAX
//	size   ROW IMAGER QEMU        the two output sizes, bytes
//	target ROW fresh MAX          imager's median / imager-fresh's must be <= MAX
//	data   ROW BYTES              the row's allocated data: adds s per GiB of it
//	floor  WHAT TEXT              a line of the floor section
//	note   TEXT                   a line printed under the table
//
// TOOL is qemu (the incumbent: qemu-img, or curl then qemu-img), imager,
// or imager-fresh (imager into a new file, beside an overwrite row).

// errUnmet is tableMain's error under -strict when a target is not met.
var errUnmet = errors.New("targets not met")

type row struct {
	name                 string
	secs                 map[string][]float64
	peakKiB              map[string]int64
	minRatio             float64 // 0: none
	maxSize, maxFresh    float64
	imagerSize, qemuSize int64
	dataBytes            int64
}

type samples struct {
	header, notes []string
	floor         [][2]string
	quick         bool
	rows          []*row
	byName        map[string]*row
}

func (s *samples) row(name string) *row {
	if r, ok := s.byName[name]; ok {
		return r
	}
	r := &row{name: name, secs: map[string][]float64{}, peakKiB: map[string]int64{}}
	s.byName[name] = r
	s.rows = append(s.rows, r)
	return r
}

// parseSamples reads records; a malformed one is an error naming its line
// (a table built around a garbled record would be silently wrong).
func parseSamples(s *samples, name string, in io.Reader) error {
	sc := bufio.NewScanner(in)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		bad := func(why string) error { return fmt.Errorf("%s:%d: %s: %q", name, n, why, line) }
		want := map[string]int{"header": 2, "quick": 2, "run": 5, "target": 4, "size": 4, "data": 3, "floor": 3, "note": 2}[f[0]]
		if want == 0 {
			return bad("unknown record")
		}
		if len(f) != want {
			return bad(fmt.Sprintf("want %d fields", want))
		}
		switch f[0] {
		case "header":
			if !slices.Contains(s.header, f[1]) {
				s.header = append(s.header, f[1])
			}
		case "quick":
			s.quick = s.quick || f[1] == "1"
		case "note":
			s.notes = append(s.notes, f[1])
		case "floor":
			s.floor = append(s.floor, [2]string{f[1], f[2]})
		case "run":
			secs, err1 := strconv.ParseFloat(f[3], 64)
			kib, err2 := strconv.ParseInt(f[4], 10, 64)
			if err1 != nil || err2 != nil || secs < 0 || kib < 0 || math.IsInf(secs, 0) || math.IsNaN(secs) {
				return bad("bad seconds or KiB")
			}
			r := s.row(f[1])
			r.secs[f[2]] = append(r.secs[f[2]], secs)
			r.peakKiB[f[2]] = max(r.peakKiB[f[2]], kib)
		case "target":
			v, err := strconv.ParseFloat(f[3], 64)
			if err != nil || v <= 0 {
				return bad("bad target")
			}
			r := s.row(f[1])
			switch f[2] {
			case "ratio":
				r.minRatio = v
			case "size":
				r.maxSize = v
			case "fresh":
				r.maxFresh = v
			default:
				return bad("unknown target kind")
			}
		case "size":
			a, err1 := strconv.ParseInt(f[2], 10, 64)
			b, err2 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil || a <= 0 || b <= 0 {
				return bad("bad sizes")
			}
			r := s.row(f[1])
			r.imagerSize, r.qemuSize = a, b
		case "data":
			v, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil || v <= 0 {
				return bad("bad byte count")
			}
			s.row(f[1]).dataBytes = v
		}
	}
	return sc.Err()
}

// median of v (the mean of the middle two when len(v) is even), its
// minimum and maximum; v is not modified.
func median(v []float64) (med, lo, hi float64) {
	if len(v) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

// verdict of one row: its target text, and what is not met (empty: all
// met). rssMiB bounds imager's peak on every row.
func (r *row) verdict(rssMiB float64) (target string, unmet []string) {
	var parts []string
	q, _, _ := median(r.secs["qemu"])
	im, _, _ := median(r.secs["imager"])
	if r.minRatio > 0 {
		parts = append(parts, fmt.Sprintf(">=%.2gx", r.minRatio))
		if ratio := q / im; !(ratio >= r.minRatio) { // NaN (no runs) is unmet
			unmet = append(unmet, fmt.Sprintf("ratio %.2fx < %.2gx", ratio, r.minRatio))
		}
	}
	if r.maxSize > 0 {
		sr := float64(r.imagerSize) / float64(r.qemuSize)
		parts = append(parts, fmt.Sprintf("size %.3f<=%.3g", sr, r.maxSize))
		if !(sr <= r.maxSize) {
			unmet = append(unmet, fmt.Sprintf("size %.3fx > %.3gx", sr, r.maxSize))
		}
	}
	if r.maxFresh > 0 {
		fr, _, _ := median(r.secs["imager-fresh"])
		ratio := im / fr
		parts = append(parts, fmt.Sprintf("ovw/fresh %.2f<=%.3g", ratio, r.maxFresh))
		if !(ratio <= r.maxFresh) {
			unmet = append(unmet, fmt.Sprintf("overwrite %.2fx of fresh > %.3gx", ratio, r.maxFresh))
		}
	}
	if _, ok := r.secs["imager"]; ok {
		if peak := float64(r.peakKiB["imager"]) / 1024; peak > rssMiB {
			unmet = append(unmet, fmt.Sprintf("imager peak %.0f MiB > %.0f MiB", peak, rssMiB))
		}
	}
	if len(parts) == 0 {
		return "-", unmet
	}
	return strings.Join(parts, " "), unmet
}

func fmtSecs(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	m, lo, hi := median(v)
	return fmt.Sprintf("%.3f (%.3f-%.3f)", m, lo, hi)
}

func fmtMiB(r *row, tool string) string {
	if _, ok := r.secs[tool]; !ok {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(r.peakKiB[tool])/1024)
}

// writeTable prints the table and returns the rows whose targets are not
// met, each with why.
func writeTable(s *samples, w io.Writer, rssMiB float64) []string {
	if s.quick {
		fmt.Fprintln(w, "QUICK: not a measurement (BENCH_QUICK=1: a smoke test of the scripts, too few runs to mean anything)")
	}
	for _, h := range s.header {
		fmt.Fprintln(w, h)
	}
	fmt.Fprintf(w, "median wall seconds (min-max) of alternating runs; ratio = qemu median / imager median; every row also needs imager peak RSS <= %.0f MiB\n", rssMiB)
	withData := slices.ContainsFunc(s.rows, func(r *row) bool { return r.dataBytes > 0 })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "row\tqemu_s\timager_s\tratio\ttarget\tverdict\timager_MiB\tqemu_MiB"
	if withData {
		head += "\tdata_GiB\timager_s/GiB\tqemu_s/GiB"
	}
	fmt.Fprintln(tw, head)
	var unmetRows []string
	for _, r := range s.rows {
		q, _, _ := median(r.secs["qemu"])
		im, _, _ := median(r.secs["imager"])
		ratio := "-"
		if len(r.secs["qemu"]) > 0 && len(r.secs["imager"]) > 0 {
			ratio = fmt.Sprintf("%.2fx", q/im)
		}
		target, unmet := r.verdict(rssMiB)
		v := "MET"
		if len(unmet) > 0 {
			v = "NOT MET"
			unmetRows = append(unmetRows, r.name+": "+strings.Join(unmet, ", "))
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", r.name, fmtSecs(r.secs["qemu"]), fmtSecs(r.secs["imager"]), ratio, target, v, fmtMiB(r, "imager"), fmtMiB(r, "qemu"))
		if withData {
			if r.dataBytes > 0 {
				gib := float64(r.dataBytes) / (1 << 30)
				per := func(m float64, tool string) string {
					if len(r.secs[tool]) == 0 {
						return "-"
					}
					return fmt.Sprintf("%.3f", m/gib)
				}
				line += fmt.Sprintf("\t%.2f\t%s\t%s", gib, per(im, "imager"), per(q, "qemu"))
			} else {
				line += "\t-\t-\t-"
			}
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	for _, r := range s.rows {
		if fr := r.secs["imager-fresh"]; len(fr) > 0 {
			fmt.Fprintf(w, "%s: imager into a new file, alternating with the overwrites: %s s\n", r.name, fmtSecs(fr))
		}
		if r.imagerSize > 0 {
			fmt.Fprintf(w, "%s: output size imager %d bytes, qemu-img %d bytes: %.4fx\n", r.name, r.imagerSize, r.qemuSize, float64(r.imagerSize)/float64(r.qemuSize))
		}
	}
	for _, n := range s.notes {
		fmt.Fprintln(w, n)
	}
	if len(s.floor) > 0 {
		fmt.Fprintln(w, "\nfloor (what the machine does with no VMDK in the way):")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range s.floor {
			fmt.Fprintf(tw, "  %s\t%s\n", f[0], f[1])
		}
		tw.Flush()
	}
	if len(unmetRows) == 0 {
		fmt.Fprintf(w, "targets: all %d rows MET\n", len(s.rows))
	} else {
		fmt.Fprintf(w, "targets: %d of %d rows NOT MET:\n", len(unmetRows), len(s.rows))
		for _, u := range unmetRows {
			fmt.Fprintln(w, "  "+u)
		}
	}
	return unmetRows
}

func tableMain(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("table", flag.ContinueOnError)
	strict := fs.Bool("strict", false, "exit 3 when a target is not met")
	rss := fs.Float64("rss-mib", 64, "imager's peak RSS bound on every row, MiB")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("table: no samples files")
	}
	s := &samples{byName: map[string]*row{}}
	for _, name := range fs.Args() {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		err = parseSamples(s, name, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	if unmet := writeTable(s, w, *rss); len(unmet) > 0 && *strict {
		return errUnmet
	}
	return nil
}
