package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// imager runs the command in-process and returns exit code, stdout, stderr.
func imager(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func qemu(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// chainDir makes a 3-deep chain and one image of every subformat.
func chainDir(t *testing.T) string {
	dir := t.TempDir()
	qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "8M")
	qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 1 0 2M", "-c", "write -P 9 6M 64k", "base.vmdk")
	qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "mid.vmdk")
	qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 2 1M 2M", "mid.vmdk")
	qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "mid.vmdk", "-F", "vmdk", "top.vmdk")
	qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 3 1536k 100k", "top.vmdk")
	for _, sf := range []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"} {
		qemu(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "vmdk", "-o", "subformat="+sf, "top.vmdk", sf+".vmdk")
	}
	return dir
}

var images = []string{"base.vmdk", "mid.vmdk", "top.vmdk", "monolithicSparse.vmdk", "monolithicFlat.vmdk",
	"twoGbMaxExtentSparse.vmdk", "twoGbMaxExtentFlat.vmdk", "streamOptimized.vmdk"}

func TestInfoMatchesQemu(t *testing.T) {
	dir := chainDir(t)
	for _, img := range images {
		code, out, errs := imager("info", "--output=json", filepath.Join(dir, img))
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", img, code, errs)
		}
		var ours infoJSON
		if err := json.Unmarshal([]byte(out), &ours); err != nil {
			t.Fatal(err)
		}
		var theirs struct {
			VirtualSize    int64  `json:"virtual-size"`
			Backing        string `json:"backing-filename"`
			FormatSpecific struct {
				Data struct {
					CID        uint32 `json:"cid"`
					ParentCID  uint32 `json:"parent-cid"`
					CreateType string `json:"create-type"`
				} `json:"data"`
			} `json:"format-specific"`
		}
		json.Unmarshal(qemu(t, dir, "qemu-img", "info", "-f", "vmdk", "--output=json", img), &theirs)
		q := theirs.FormatSpecific.Data
		want := fmt.Sprintf("%d %08x %08x %s %s", theirs.VirtualSize, q.CID, q.ParentCID, q.CreateType, theirs.Backing)
		got := fmt.Sprintf("%d %s %s %s %s", ours.VirtualSize, ours.CID, ours.ParentCID, ours.CreateType, ours.BackingFile)
		if got != want {
			t.Errorf("%s: imager info %q, qemu-img info %q", img, got, want)
		}
		if ours.Format != "vmdk" || ours.AllocatedBytes <= 0 || len(ours.Extents) == 0 {
			t.Errorf("%s: %+v", img, ours)
		}
	}
}

func TestConvertMatchesQemu(t *testing.T) {
	dir := chainDir(t)
	for _, img := range images {
		ours, theirs := filepath.Join(dir, img+".ours.raw"), filepath.Join(dir, img+".qemu.raw")
		if code, _, errs := imager("convert", "-O", "raw", filepath.Join(dir, img), ours); code != 0 {
			t.Fatalf("%s: exit %d: %s", img, code, errs)
		}
		qemu(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", img, theirs)
		a, _ := os.ReadFile(ours)
		b, _ := os.ReadFile(theirs)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: imager convert differs from qemu-img convert", img)
		}
		qemu(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", img, ours)
		var st syscall.Stat_t
		syscall.Stat(ours, &st)
		if st.Blocks*512 >= int64(len(a)) {
			t.Errorf("%s: output is not sparse: %d bytes allocated of %d", img, st.Blocks*512, len(a))
		}
	}
	// raw -> raw works too, and compare agrees.
	raw := filepath.Join(dir, "top.vmdk.ours.raw")
	if code, _, errs := imager("convert", "-f", "raw", "-O", "raw", raw, raw+".2"); code != 0 {
		t.Fatal(errs)
	}
	if code, out, _ := imager("compare", raw, raw+".2"); code != 0 || !strings.Contains(out, "identical") {
		t.Fatalf("compare raw copies: %d %s", code, out)
	}
}

// TestMapMatchesQemu compares which 64 KiB grains hold data, and at which
// depth, with qemu-img map.
func TestMapMatchesQemu(t *testing.T) {
	dir := chainDir(t)
	type rng struct {
		Start, Length int64
		Depth         int
		Data          bool
	}
	grains := func(rs []rng) map[int64]string {
		m := map[int64]string{}
		for _, r := range rs {
			for o := r.Start; o < r.Start+r.Length; o += 64 << 10 {
				if r.Data {
					m[o] = fmt.Sprintf("data@%d", r.Depth)
				}
			}
		}
		return m
	}
	for _, img := range []string{"top.vmdk", "monolithicSparse.vmdk", "twoGbMaxExtentFlat.vmdk"} {
		code, out, errs := imager("map", "--output=json", filepath.Join(dir, img))
		if code != 0 {
			t.Fatal(errs)
		}
		var ours, theirs []rng
		json.Unmarshal([]byte(out), &ours)
		json.Unmarshal(qemu(t, dir, "qemu-img", "map", "-f", "vmdk", "--output=json", img), &theirs)
		var total int64
		for _, r := range ours {
			total += r.Length
		}
		if total != 8<<20 {
			t.Errorf("%s: map covers %d bytes", img, total)
		}
		if g, w := fmt.Sprint(grains(ours)), fmt.Sprint(grains(theirs)); g != w {
			t.Errorf("%s: map\n ours %s\nqemu's %s", img, g, w)
		}
	}
}

func TestCompareExitCodes(t *testing.T) {
	dir := chainDir(t)
	p := func(n string) string { return filepath.Join(dir, n) }
	if code, out, _ := imager("compare", p("top.vmdk"), p("streamOptimized.vmdk")); code != 0 {
		t.Errorf("same content: exit %d %s", code, out)
	}
	code, out, _ := imager("compare", p("top.vmdk"), p("mid.vmdk"))
	if code != 1 || !strings.Contains(out, fmt.Sprintf("Content mismatch at offset %d!", 1536<<10)) {
		t.Errorf("different content: exit %d %q", code, out)
	}
	if code, _, errs := imager("compare", p("top.vmdk"), p("nonexistent.vmdk")); code != 2 || !strings.Contains(errs, "nonexistent.vmdk") {
		t.Errorf("missing file: exit %d %q", code, errs)
	}
	// Different sizes: equal unless strict, when the tail reads zeros.
	qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "small.vmdk", "1M")
	qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "big.vmdk", "2M")
	if code, _, _ := imager("compare", p("small.vmdk"), p("big.vmdk")); code != 0 {
		t.Errorf("zero tail: exit %d", code)
	}
	if code, _, _ := imager("compare", "-s", p("small.vmdk"), p("big.vmdk")); code != 1 {
		t.Errorf("strict: exit %d", code)
	}
}

// TestErrorsAreOneLine: failures print one line naming the file, exit
// non-zero, and never show a Go panic.
func TestErrorsAreOneLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.vmdk")
	hdr := make([]byte, 1024)
	copy(hdr, "KDMV\x01\x00\x00\x00\x00\x00\x00\x00")
	os.WriteFile(bad, hdr, 0o644)
	for _, args := range [][]string{
		{"info", bad},
		{"convert", "-O", "raw", bad, filepath.Join(dir, "out.raw")},
		{"map", bad},
		{"info", filepath.Join(dir, "missing.vmdk")},
		{"convert", "-O", "qcow2", bad, "x"},
		{"info"},
		{"frobnicate"},
	} {
		code, _, errs := imager(args...)
		if code == 0 || strings.Contains(errs, "goroutine") || strings.Contains(errs, "panic") {
			t.Errorf("%v: exit %d, stderr %q", args, code, errs)
		}
		if args[0] != "frobnicate" && len(args) > 1 && strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%v: stderr is not one line: %q", args, errs)
		}
	}
	if _, _, errs := imager("info", bad); !strings.Contains(errs, bad) {
		t.Errorf("error does not name the file: %q", errs)
	}
}

// loopDevice attaches a file of size bytes, prefilled with 0xff so skipped
// zero ranges would show, to a loop device (needs root, as CI is).
func loopDevice(t *testing.T, size int64) string {
	t.Helper()
	backing := filepath.Join(t.TempDir(), "dev.img")
	os.WriteFile(backing, bytes.Repeat([]byte{0xff}, int(size)), 0o644)
	return attachLoop(t, backing)
}

// attachLoop attaches backing to a free loop device until the test ends.
func attachLoop(t *testing.T, backing string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", backing).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup (the block-device tests need root): %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func TestConvertToBlockDevice(t *testing.T) {
	dir := chainDir(t)
	dev := loopDevice(t, 8<<20)
	if code, _, errs := imager("convert", "-O", "raw", filepath.Join(dir, "top.vmdk"), dev); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	got, err := os.ReadFile(dev)
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "want.raw")
	qemu(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", "top.vmdk", want)
	if w, _ := os.ReadFile(want); !bytes.Equal(got, w) {
		t.Fatal("block device content differs from qemu-img convert")
	}
	small := loopDevice(t, 4<<20)
	code, _, errs := imager("convert", "-O", "raw", filepath.Join(dir, "top.vmdk"), small)
	if code == 0 || !strings.Contains(errs, "virtual size is 8.0 MiB (8388608 bytes)") {
		t.Fatalf("too-small device: exit %d %q", code, errs)
	}
}

// TestConvertToStream: raw and VMDK chains convert to streamOptimized that
// qemu-img checks and compares equal; no temporary file is left behind.
func TestConvertToStream(t *testing.T) {
	dir := chainDir(t)
	qemu(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", "top.vmdk", "top.raw")
	for _, src := range []string{"top.vmdk", "top.raw", "streamOptimized.vmdk"} {
		out := filepath.Join(dir, "out-"+src+".vmdk")
		if code, _, errs := imager("convert", "-O", "vmdk", "-o", "subformat=streamOptimized,adapter_type=lsilogic", "-c", "9", filepath.Join(dir, src), out); code != 0 {
			t.Fatalf("%s: exit %d: %s", src, code, errs)
		}
		qemu(t, dir, "qemu-img", "check", "-f", "vmdk", out)
		qemu(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", out, "top.raw")
		fi, _ := os.Stat(out)
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v", out, fi.Mode())
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp-*")); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	for _, bad := range [][]string{
		{"-O", "vmdk", "-o", "subformat=bogus"},
		{"-O", "vmdk", "-o", "adapter_type=scsi9", "-o", "subformat=streamOptimized"},
		{"-O", "vmdk", "-o", "nokey"},
		{"-O", "raw", "-c", "5"},
	} {
		args := append([]string{"convert"}, bad...)
		args = append(args, filepath.Join(dir, "top.vmdk"), filepath.Join(dir, "x.vmdk"))
		if code, _, errs := imager(args...); code == 0 || errs == "" {
			t.Errorf("%v: exit %d %q", bad, code, errs)
		}
	}
}

// TestCreateAndConvertAllSubformats: imager create makes images qemu-img
// accepts; convert and flatten write a chain into every subformat.
func TestCreateAndConvertAllSubformats(t *testing.T) {
	dir := chainDir(t)
	qemu(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", "top.vmdk", "top.raw")
	for _, sf := range []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"} {
		blank := filepath.Join(dir, "blank-"+sf+".vmdk")
		if code, _, errs := imager("create", "-q", "-o", "subformat="+sf+",adapter_type=lsilogic", blank, "3G"); code != 0 {
			t.Fatalf("create %s: %s", sf, errs)
		}
		qemu(t, dir, "qemu-img", "check", "-f", "vmdk", blank)
		var info struct {
			VirtualSize int64 `json:"virtual-size"`
		}
		json.Unmarshal(qemu(t, dir, "qemu-img", "info", "-f", "vmdk", "--output=json", blank), &info)
		if info.VirtualSize != 3<<30 {
			t.Errorf("%s: qemu-img sees %d bytes", sf, info.VirtualSize)
		}
		for _, cmd := range []string{"convert", "flatten"} {
			out := filepath.Join(dir, cmd+"-"+sf+".vmdk")
			args := []string{cmd, "-o", "subformat=" + sf, filepath.Join(dir, "top.vmdk"), out}
			if cmd == "convert" {
				args = append([]string{cmd, "-O", "vmdk"}, args[1:]...)
			}
			if code, _, errs := imager(args...); code != 0 {
				t.Fatalf("%s %s: %s", cmd, sf, errs)
			}
			qemu(t, dir, "qemu-img", "check", "-f", "vmdk", out)
			qemu(t, dir, "qemu-img", "compare", "-f", "vmdk", "-F", "raw", out, "top.raw")
		}
	}
	// A child of an imager-created base, written by qemu-io, reads the same.
	if code, _, errs := imager("create", "-q", "-b", filepath.Join(dir, "flatten-monolithicSparse.vmdk"), filepath.Join(dir, "kid.vmdk")); code != 0 {
		t.Fatal(errs)
	}
	qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 7 100k 5k", "kid.vmdk")
	if code, out, _ := imager("compare", filepath.Join(dir, "kid.vmdk"), filepath.Join(dir, "top.raw")); code != 1 || !strings.Contains(out, fmt.Sprint(100<<10)) {
		t.Errorf("compare child with its base's content: %d %s", code, out)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp-*")); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	for _, bad := range [][]string{
		{"create", filepath.Join(dir, "nosize.vmdk")},
		{"create", "-o", "subformat=monolithicFlat", "-b", filepath.Join(dir, "top.vmdk"), filepath.Join(dir, "flatchild.vmdk")},
		{"create", filepath.Join(dir, "badsize.vmdk"), "12Q"},
		{"create", "-o", "zeroed_grain=maybe", filepath.Join(dir, "z.vmdk"), "1M"},
	} {
		if code, _, errs := imager(bad...); code == 0 || errs == "" {
			t.Errorf("%v: exit %d %q", bad, code, errs)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"512": 512, "1k": 1024, "64K": 65536, "1M": 1 << 20, "2G": 2 << 30, "1.5G": 3 << 29, "1T": 1 << 40, "10GiB": 10 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "0", "1X", "abc", "99999999P"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

func TestConvertRefusesItsSource(t *testing.T) {
	dir := chainDir(t)
	before, _ := os.ReadFile(filepath.Join(dir, "monolithicFlat-flat.vmdk"))
	code, _, errs := imager("convert", "-O", "raw", filepath.Join(dir, "monolithicFlat.vmdk"), filepath.Join(dir, "monolithicFlat-flat.vmdk"))
	after, _ := os.ReadFile(filepath.Join(dir, "monolithicFlat-flat.vmdk"))
	if code == 0 || !strings.Contains(errs, "source") || !bytes.Equal(before, after) {
		t.Fatalf("exit %d %q; source changed: %v", code, errs, !bytes.Equal(before, after))
	}
	if code, _, _ := imager("convert", "-O", "raw", filepath.Join(dir, "top.vmdk"), filepath.Join(dir, "base.vmdk")); code == 0 {
		t.Fatal("overwrote a parent in the chain")
	}
}

func TestCheckExitCodes(t *testing.T) {
	dir := chainDir(t)
	p := func(n string) string { return filepath.Join(dir, n) }
	for _, img := range images {
		if code, out, errs := imager("check", p(img)); code != 0 {
			t.Errorf("%s: exit %d %s %s", img, code, out, errs)
		}
	}
	f, _ := os.OpenFile(p("top.vmdk"), os.O_RDWR|os.O_APPEND, 0)
	f.Write(make([]byte, 64<<10))
	f.Close()
	if code, out, _ := imager("check", "--output=json", p("top.vmdk")); code != 3 || !strings.Contains(out, `"leakedBytes": 65536`) {
		t.Errorf("leak: exit %d %s", code, out)
	}
	if code, out, _ := imager("check", "-r", p("top.vmdk")); code != 0 || !strings.Contains(out, "Repaired") {
		t.Errorf("repair: exit %d %s", code, out)
	}
	os.WriteFile(p("corrupt.vmdk"), append([]byte("KDMV\x01\x00\x00\x00"), make([]byte, 1024)...), 0o644)
	if code, _, _ := imager("check", p("corrupt.vmdk")); code != 2 {
		t.Errorf("corrupt: exit %d", code)
	}
	if code, _, _ := imager("check", p("missing.vmdk")); code != 1 {
		t.Errorf("missing: exit %d", code)
	}
}

func rawOf(t *testing.T, dir, img string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "r.raw")
	qemu(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", img, out)
	b, _ := os.ReadFile(out)
	return b
}

func cidsOf(t *testing.T, dir, img string) (cid, parent string) {
	t.Helper()
	_, out, _ := imager("info", "--output=json", filepath.Join(dir, img))
	var i infoJSON
	json.Unmarshal([]byte(out), &i)
	return i.CID, i.ParentCID
}

// TestCommitKeepsChain: after commit the parent holds the child's content
// and the child still reads the same, with a matching parentCID (qemu-img
// commit breaks that link).
func TestCommitKeepsChain(t *testing.T) {
	dir := chainDir(t)
	want := rawOf(t, dir, "top.vmdk")
	if code, _, errs := imager("commit", "-q", filepath.Join(dir, "top.vmdk")); code != 0 {
		t.Fatal(errs)
	}
	if !bytes.Equal(rawOf(t, dir, "mid.vmdk"), want) || !bytes.Equal(rawOf(t, dir, "top.vmdk"), want) {
		t.Fatal("content changed by commit")
	}
	midCID, _ := cidsOf(t, dir, "mid.vmdk")
	if _, parent := cidsOf(t, dir, "top.vmdk"); parent != midCID {
		t.Fatalf("child parentCID %s, parent CID %s", parent, midCID)
	}
	qemu(t, dir, "qemu-img", "check", "-f", "vmdk", "mid.vmdk")
	if code, _, _ := imager("commit", filepath.Join(dir, "base.vmdk")); code == 0 {
		t.Fatal("commit of an image without a backing file succeeded")
	}
}

// TestRebase: a safe rebase keeps the content over a different backing
// file; -u only relinks.
func TestRebase(t *testing.T) {
	dir := chainDir(t)
	want := rawOf(t, dir, "top.vmdk")
	qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "other.vmdk", "8M")
	qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 0x44 0 8M", "other.vmdk")
	if code, _, errs := imager("rebase", "-b", filepath.Join(dir, "other.vmdk"), filepath.Join(dir, "top.vmdk")); code != 0 {
		t.Fatal(errs)
	}
	if !bytes.Equal(rawOf(t, dir, "top.vmdk"), want) {
		t.Fatal("safe rebase changed the content")
	}
	var info struct {
		Backing string `json:"backing-filename"`
	}
	json.Unmarshal(qemu(t, dir, "qemu-img", "info", "-f", "vmdk", "--output=json", "top.vmdk"), &info)
	otherCID, _ := cidsOf(t, dir, "other.vmdk")
	if _, parent := cidsOf(t, dir, "top.vmdk"); info.Backing != "other.vmdk" || parent != otherCID {
		t.Fatalf("backing %q parentCID %s, want other.vmdk %s", info.Backing, parent, otherCID)
	}
	// Rebase onto nothing: self-contained, same content.
	if code, _, errs := imager("rebase", "-b", "", filepath.Join(dir, "top.vmdk")); code != 0 {
		t.Fatal(errs)
	}
	if !bytes.Equal(rawOf(t, dir, "top.vmdk"), want) {
		t.Fatal("rebase onto nothing changed the content")
	}
	// Unsafe: metadata only.
	qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "kid.vmdk")
	if code, _, errs := imager("rebase", "-u", "-b", filepath.Join(dir, "other.vmdk"), filepath.Join(dir, "kid.vmdk")); code != 0 {
		t.Fatal(errs)
	}
	if !bytes.Equal(rawOf(t, dir, "kid.vmdk"), rawOf(t, dir, "other.vmdk")) {
		t.Fatal("unsafe rebase should show the new backing's content")
	}
}
