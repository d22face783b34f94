package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/test/vcenter"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// warmVCenter is a simulated vCenter (the first delta of each disk
// vmfsSparse when cowd) and the flags that reach it over the datastore.
func warmVCenter(t *testing.T, cowd bool) (*vcenter.Fixture, []string) {
	t.Helper()
	f, err := vcenter.Start(context.Background(), vcenter.Options{VMFSSparse: cowd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	creds := t.TempDir()
	for name, v := range map[string]string{"username": f.Username, "password": f.Password} {
		if err := os.WriteFile(filepath.Join(creds, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f, []string{"--vsphere-url", f.URL, "--vsphere-thumbprint", f.ThumbprintSHA256, "--credentials-dir", creds}
}

// vmdkContent is what the VMDK at path (and its chain, inside root)
// reads as.
func vmdkContent(t *testing.T, path, root string) []byte {
	t.Helper()
	d, err := vmdk.Open(path, vmdk.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	p := make([]byte, d.Size())
	if _, err := d.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	return p
}

// runApplyDeltaTest runs apply-delta with a result file.
func runApplyDeltaTest(t *testing.T, args ...string) (int, *jobapi.Result, string) {
	t.Helper()
	res := filepath.Join(t.TempDir(), "result.json")
	code, _, errs := imager(append([]string{"apply-delta", "--result-file", res}, args...)...)
	b, err := os.ReadFile(res)
	if err != nil {
		t.Fatalf("no result file (exit %d, %s)", code, errs)
	}
	r, err := jobapi.Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return code, r, errs
}

// zeroedByDelta is the offset of a 4 KiB block the delta between a and b
// zeroes where a held data (-1: none).
func zeroedByDelta(a, b []byte) int64 {
	const blk = 4096
	for off := 0; off+blk <= len(a); off += blk {
		if isAllZero(b[off:off+blk]) && !isAllZero(a[off:off+blk]) {
			return int64(off)
		}
	}
	return -1
}

func isAllZero(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// Warm migration: the running VM's disk imported at s1 (raw, the PVC; and
// as a VMDK, the base image), then only the delta s1 -> s2 as a child of
// that base, applied to the raw disk: it reads as the disk at s2, byte
// for byte, having copied only the delta. For seSparse deltas (whose
// zeroed and unmapped grains must zero what the base held) and for a
// vmfsSparse (COWD) one.
func TestImportVSphereDelta(t *testing.T) {
	for _, c := range []struct {
		name string
		cowd bool
	}{{"seSparse", false}, {"vmfsSparse", true}} {
		t.Run(c.name, func(t *testing.T) {
			f, flags := warmVCenter(t, c.cowd)
			vm := f.VMs[1]
			s1, s2 := vm.Snapshots[0], vm.Snapshots[1]
			want1, err := s1.Disks[0].Bytes()
			if err != nil {
				t.Fatal(err)
			}
			want2, err := s2.Disks[0].Bytes()
			if err != nil {
				t.Fatal(err)
			}
			zeroed := zeroedByDelta(want1, want2)
			if !c.cowd && zeroed < 0 {
				t.Fatal("the fixture's seSparse delta zeroes nothing the base held: the test would not show zeroed grains hiding the base")
			}
			at := func(snap string) []string {
				return append(append([]string{}, flags...), "--vsphere-moref", vm.MoRef, "--vsphere-snapshot", snap)
			}

			// s1: the PVC's raw disk, and the base image.
			raw := t.TempDir()
			code, r, _, errs := runImportTest(t, append([]string{"--target", raw}, at(s1.Name)...)...)
			wantImported(t, code, r, errs, filepath.Join(raw, "disk.img"), want1)
			root := t.TempDir()
			baseDir, deltaDir := filepath.Join(root, "s1"), filepath.Join(root, "s2")
			for _, d := range []string{baseDir, deltaDir} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			code, base, _, errs := runImportTest(t, append([]string{"--target", baseDir, "--target-format", "vmdk"}, at(s1.Name)...)...)
			if code != 0 {
				t.Fatalf("base: exit %d %+v %s", code, base, errs)
			}
			basePath := filepath.Join(baseDir, "disk.vmdk")
			if !bytes.Equal(vmdkContent(t, basePath, root), want1) {
				t.Fatal("the base image differs from the disk at s1")
			}

			// The delta s1 -> s2, a child of the base.
			args := append([]string{"--target", deltaDir, "--target-format", "vmdk", "-b", basePath, "--root", root, "--vsphere-delta-from", s1.Name}, at(s2.Name)...)
			code, r, _, errs = runImportTest(t, args...)
			if code != 0 || r.Phase != jobapi.Succeeded {
				t.Fatalf("delta: exit %d %+v %s", code, r, errs)
			}
			deltaPath := filepath.Join(deltaDir, "disk.vmdk")
			got := vmdkContent(t, deltaPath, root)
			if !bytes.Equal(got, want2) {
				t.Fatal("the delta over the base differs from the disk at s2")
			}
			if zeroed >= 0 && !isAllZero(got[zeroed:zeroed+4096]) {
				t.Fatalf("bytes at %d: the delta zeroes them, the child reads the base's", zeroed)
			}
			v := r.VSphere
			if r.ParentCID != base.CID || r.Target != deltaPath || r.VirtualSize != s2.Disks[0].Capacity ||
				v == nil || v.DeltaLinks != 1 || v.BaseTop != s1.Disks[0].Files[0] || !strings.Contains(v.DeltaFrom, s1.MoRef) || !strings.Contains(v.Snapshot, s2.MoRef) {
				t.Fatalf("result %+v, vSphere part %+v (base CID %s, s1 files %v)", r, v, base.CID, s1.Disks[0].Files)
			}
			// What was read and stored is the delta, not the disk (the
			// fixture's deltas rewrite about 5% of the grains).
			if r.BytesRead <= 0 || r.BytesRead > r.VirtualSize/5 || r.AllocatedBytes > r.VirtualSize/3 {
				t.Fatalf("read %d and stored %d bytes of a %d-byte disk", r.BytesRead, r.AllocatedBytes, r.VirtualSize)
			}

			// The PVC brought to s2.
			img := filepath.Join(raw, "disk.img")
			code, ar, errs := runApplyDeltaTest(t, "--root", root, "--target", img, "--expect-parent-cid", base.CID, deltaPath)
			if code != 0 || ar.Phase != jobapi.Succeeded {
				t.Fatalf("apply-delta: exit %d %+v %s", code, ar, errs)
			}
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != s2.Disks[0].SHA256 {
				t.Fatal("the raw disk after apply-delta is not the disk at s2")
			}
			t.Logf("%d-byte disk: delta read %d, stored %d; apply-delta wrote %d in %d ranges", r.VirtualSize, r.BytesRead, r.AllocatedBytes, ar.BytesWritten, ar.Ranges)
			if ar.BytesWritten <= 0 || ar.BytesWritten > ar.VirtualSize/4 || ar.Ranges <= 0 {
				t.Fatalf("apply-delta wrote %d bytes in %d ranges into a %d-byte disk", ar.BytesWritten, ar.Ranges, ar.VirtualSize)
			}
		})
	}
}

// apply-delta writes exactly the delta's own ranges: its data (a grain
// partly written holds the parent's bytes around the write), its zeroed
// grains as zeros over what the target held, and past the target's end a
// file grows; every other byte of the target stays as it was, even one
// that is not the parent's.
func TestApplyDelta(t *testing.T) {
	dir := t.TempDir()
	base, child, img := filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "child.vmdk"), filepath.Join(dir, "disk.img")
	const baseSize, childSize = 1 << 20, 2 << 20
	content := make([]byte, baseSize)
	for i := range content {
		content[i] = byte(i*7 + 1)
	}
	if err := vmdk.Create(base, vmdk.CreateOptions{ImageOptions: vmdk.ImageOptions{Size: baseSize}}); err != nil {
		t.Fatal(err)
	}
	writeVMDK(t, base, 0, content)
	if err := vmdk.Create(child, vmdk.CreateOptions{ImageOptions: vmdk.ImageOptions{Size: childSize}, Backing: base, ZeroedGrains: true}); err != nil {
		t.Fatal(err)
	}
	writeVMDK(t, child, 64<<10+100, bytes.Repeat([]byte{0xd1}, 4000))
	writeVMDK(t, child, 128<<10, make([]byte, 64<<10)) // a zeroed grain over the base's data
	writeVMDK(t, child, baseSize+512<<10, bytes.Repeat([]byte{0xd2}, 64<<10))

	// The target: the base's content, with bytes of its own where the
	// delta has nothing.
	target := append([]byte{}, content...)
	copy(target[512<<10:], "not the base's, and not the delta's")
	if err := os.WriteFile(img, target, 0o644); err != nil {
		t.Fatal(err)
	}
	want := vmdkContent(t, child, dir)
	copy(want[512<<10:], "not the base's, and not the delta's")
	if !bytes.Equal(want[128<<10:192<<10], make([]byte, 64<<10)) || bytes.Equal(target[128<<10:192<<10], make([]byte, 64<<10)) {
		t.Fatal("the zeroed grain would not show")
	}

	bd, err := vmdk.Open(child, vmdk.Options{})
	if err != nil {
		t.Fatal(err)
	}
	parentCID := bd.ParentCID()
	bd.Close()
	wrong := parentCID ^ 1
	short := filepath.Join(dir, "short.img")
	if err := os.WriteFile(short, target[:baseSize/2], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args   []string
		code   int
		reason string
	}{
		{[]string{"--target", img, "--expect-parent-cid", hexCID(wrong), child}, jobapi.ExitPermanent, jobapi.ReasonChainBroken},
		{[]string{"--target", img, base}, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments},
		{[]string{"--target", base, child}, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments},
		{[]string{"--target", short, child}, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments},
		{[]string{"--target", img, "--expect-parent-cid", "xyz", child}, jobapi.ExitUsage, jobapi.ReasonInvalidArguments},
		{[]string{child}, jobapi.ExitUsage, jobapi.ReasonInvalidArguments},
	} {
		baseBefore, err := os.ReadFile(base)
		if err != nil {
			t.Fatal(err)
		}
		code, r, _ := runApplyDeltaTest(t, c.args...)
		wantFailed(t, code, r, c.code, c.reason)
		if got, _ := os.ReadFile(img); !bytes.Equal(got, target) {
			t.Fatalf("%q: the target changed", c.args)
		}
		if got, _ := os.ReadFile(base); !bytes.Equal(got, baseBefore) {
			t.Fatalf("%q: the base changed", c.args)
		}
		if got, _ := os.ReadFile(short); !bytes.Equal(got, target[:baseSize/2]) {
			t.Fatalf("%q: the short target changed", c.args)
		}
	}

	// Without its parent, the delta's parentCID is no one's word.
	if err := os.Rename(base, base+".away"); err != nil {
		t.Fatal(err)
	}
	code, r, _ := runApplyDeltaTest(t, "--target", img, "--expect-parent-cid", hexCID(parentCID), child)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonChainBroken)
	if got, _ := os.ReadFile(img); !bytes.Equal(got, target) {
		t.Fatal("the target changed")
	}
	if err := os.Rename(base+".away", base); err != nil {
		t.Fatal(err)
	}

	code, r, errs := runApplyDeltaTest(t, "--target", img, "--expect-parent-cid", hexCID(parentCID), child)
	if code != 0 {
		t.Fatalf("exit %d %+v %s", code, r, errs)
	}
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the target is not the delta over what it held")
	}
	// Three grains, one of them partly written (the whole grain is the
	// delta's).
	if r.BytesWritten != 3*64<<10 || r.Ranges != 3 || r.VirtualSize != childSize {
		t.Fatalf("result %+v", r)
	}
}

func hexCID(c uint32) string {
	return strings.ToLower(hex.EncodeToString([]byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)}))
}

// writeVMDK writes p at off into the VMDK at path, durably.
func writeVMDK(t *testing.T, path string, off int64, p []byte) {
	t.Helper()
	d, err := vmdk.Open(path, vmdk.Options{ReadWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// A delta import refuses what would not be the change between the base
// and the point asked for, leaving nothing in the target; the powered-off
// VM's disk as it is now is a point too (the delta since its current
// snapshot).
func TestImportVSphereDeltaRefused(t *testing.T) {
	f, flags := warmVCenter(t, false)
	run := func(baseFlags []string, args ...string) (int, *jobapi.Result, string) {
		code, r, _, errs := runImportTest(t, append(append(append([]string{}, baseFlags...), flags...), args...)...)
		return code, r, errs
	}
	root := t.TempDir()
	baseDir, deltaDir := filepath.Join(root, "base"), filepath.Join(root, "delta")
	for _, d := range []string{baseDir, deltaDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	off := f.VMs[0]
	code, base, errs := run([]string{"--target", baseDir, "--target-format", "vmdk"}, "--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s1")
	if code != 0 {
		t.Fatalf("base: exit %d %+v %s", code, base, errs)
	}
	basePath := filepath.Join(baseDir, "disk.vmdk")
	small := filepath.Join(baseDir, "small.vmdk")
	if err := vmdk.Create(small, vmdk.CreateOptions{ImageOptions: vmdk.ImageOptions{Size: 1 << 20}}); err != nil {
		t.Fatal(err)
	}
	delta := []string{"--target", deltaDir, "--target-format", "vmdk", "--root", root}
	for _, c := range []struct {
		name   string
		args   []string
		code   int
		reason string
		msg    string
	}{
		{"not an ancestor", []string{"-b", basePath, "--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s1", "--vsphere-delta-from", "s2"}, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments, "is not an ancestor of snapshot s1"},
		{"the same snapshot", []string{"-b", basePath, "--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s1", "--vsphere-delta-from", "s1"}, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments, "the same snapshot"},
		{"no such snapshot", []string{"-b", basePath, "--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s2", "--vsphere-delta-from", "s9"}, jobapi.ExitPermanent, jobapi.ReasonSourceNotFound, "--vsphere-delta-from s9"},
		{"a base of another size", []string{"-b", small, "--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s2", "--vsphere-delta-from", "s1"}, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments, "not the image imported at"},
		{"no base", []string{"--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s2", "--vsphere-delta-from", "s1"}, jobapi.ExitUsage, jobapi.ReasonInvalidArguments, "with -b"},
		{"nfc", []string{"-b", basePath, "--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s2", "--vsphere-delta-from", "s1", "--vsphere-transport", "nfc"}, jobapi.ExitUsage, jobapi.ReasonInvalidArguments, "--vsphere-transport datastore"},
		{"-b alone", []string{"-b", basePath, "--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s2"}, jobapi.ExitUsage, jobapi.ReasonInvalidArguments, "-b applies with --vsphere-delta-from"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, r, _ := run(delta, c.args...)
			wantFailed(t, code, r, c.code, c.reason)
			if !strings.Contains(r.Message, c.msg) {
				t.Fatalf("message %q, want %q in it", r.Message, c.msg)
			}
			emptyDir(t, deltaDir)
		})
	}
	t.Run("raw target", func(t *testing.T) {
		code, r, _ := run([]string{"--target", deltaDir, "--root", root}, "-b", basePath, "--vsphere-moref", off.MoRef, "--vsphere-delta-from", "s1")
		wantFailed(t, code, r, jobapi.ExitUsage, jobapi.ReasonInvalidArguments)
	})

	// The powered-off VM as it is (no --vsphere-snapshot): the delta
	// since its current snapshot, s2, over the image at s2.
	s2Dir := filepath.Join(root, "s2")
	if err := os.Mkdir(s2Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	code, b2, errs := run([]string{"--target", s2Dir, "--target-format", "vmdk"}, "--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s2")
	if code != 0 {
		t.Fatalf("s2: exit %d %+v %s", code, b2, errs)
	}
	// The target is the base: refused, the base left as it was.
	b2Path := filepath.Join(s2Dir, "disk.vmdk")
	b2Before, err := os.ReadFile(b2Path)
	if err != nil {
		t.Fatal(err)
	}
	code, r, _ := run([]string{"--target", s2Dir, "--target-format", "vmdk"}, "-b", b2Path, "--vsphere-moref", off.MoRef, "--vsphere-delta-from", "s2")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	if after, err := os.ReadFile(b2Path); err != nil || !bytes.Equal(after, b2Before) || !strings.Contains(r.Message, "its own parent") {
		t.Fatalf("the base changed (%v), or the message %q does not say why", err, r.Message)
	}
	// --size smaller than the disk.
	small2 := []string{"-b", b2Path, "--vsphere-moref", off.MoRef, "--vsphere-delta-from", "s2", "--size", "1M"}
	code, r, _ = run(delta, small2...)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	emptyDir(t, deltaDir)
	// A temporary a stopped attempt left is no obstacle.
	if err := os.WriteFile(filepath.Join(deltaDir, ".disk.vmdk.delta-tmp"), []byte("an attempt's leftovers"), 0o644); err != nil {
		t.Fatal(err)
	}
	// --size larger than the disk: the delta's disk is, reading zeros
	// past vSphere's capacity.
	bigger := off.Disks[0].Capacity + 1<<20
	code, r, errs = run(delta, "-b", b2Path, "--vsphere-moref", off.MoRef, "--vsphere-delta-from", "s2", "--size", strconv.FormatInt(bigger, 10))
	if code != 0 {
		t.Fatalf("now: exit %d %+v %s", code, r, errs)
	}
	want, err := off.Disks[0].Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, make([]byte, bigger-int64(len(want)))...)
	if !bytes.Equal(vmdkContent(t, filepath.Join(deltaDir, "disk.vmdk"), root), want) {
		t.Fatal("the delta since s2 over the image at s2 is not the VM's disk now (and zeros past it)")
	}
	if r.VSphere.DeltaLinks != 1 || r.VSphere.Snapshot != "" || r.ParentCID != b2.CID {
		t.Fatalf("result %+v, vSphere %+v", r, r.VSphere)
	}
	if names, _ := os.ReadDir(deltaDir); len(names) != 1 {
		t.Fatalf("the delta's directory holds %v, want disk.vmdk alone", names)
	}
}

// jobapi's delta import and apply-delta, as the controllers build them,
// arrive whole through the commands' own flags.
func TestDeltaArgsParse(t *testing.T) {
	in := jobapi.ImportArgs{ResultFile: jobapi.ResultPath, Target: "/images/s2", TargetFormat: "vmdk", Root: "/images", Backing: "/images/s1/disk.vmdk",
		CredentialsDir: "/creds", VSphere: &jobapi.VSphereArgs{URL: "https://vc/sdk", MoRef: "vm-42", Snapshot: "s2", DeltaFrom: "s1", Transport: jobapi.TransportDatastore}}
	argv := in.Argv()
	j, _, err := parseImport(argv[1:], io.Discard)
	if err != nil {
		t.Fatalf("%q: %v", argv, err)
	}
	if j.vsphere == nil || *j.vsphere != *in.VSphere || j.backing != in.Backing || j.paths.root != in.Root || j.targetFormat != "vmdk" {
		t.Fatalf("%q arrived as %+v, backing %q, root %q", argv, j.vsphere, j.backing, j.paths.root)
	}
	ad := jobapi.ApplyDeltaArgs{ResultFile: jobapi.ResultPath, Root: "/images", Target: "/target/disk.img", ExpectParentCID: "0a1b2c3d", Delta: "/images/s2/disk.vmdk"}
	argv = ad.Argv()
	if argv[0] != "apply-delta" {
		t.Fatalf("%q", argv)
	}
	a, err := parseApplyDelta(argv[1:])
	if err != nil {
		t.Fatalf("%q: %v", argv, err)
	}
	if a.resultFile != ad.ResultFile || a.paths.root != ad.Root || a.target != ad.Target || !a.expect || a.expectCID != 0x0a1b2c3d || a.delta != ad.Delta || !a.sync {
		t.Fatalf("%q arrived as %+v", argv, a)
	}
}

// A delta whose file on the datastore fails to read part-way: the import
// fails, and the delta begun in the target is removed.
func TestImportVSphereDeltaDamaged(t *testing.T) {
	f, flags := warmVCenter(t, false)
	off := f.VMs[0]
	root := t.TempDir()
	baseDir, deltaDir := filepath.Join(root, "base"), filepath.Join(root, "delta")
	for _, d := range []string{baseDir, deltaDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	code, base, _, errs := runImportTest(t, append(append([]string{"--target", baseDir, "--target-format", "vmdk"}, flags...), "--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s1")...)
	if code != 0 {
		t.Fatalf("base: exit %d %+v %s", code, base, errs)
	}
	// The s1 -> s2 delta's extent, cut: its header and tables still
	// read, the grains stored last (those of the first 16 MiB range: the
	// generator stores ranges in descending order) are gone, so the copy
	// fails after the delta was created.
	s2 := off.Snapshots[1].Disks[0]
	extent := f.LocalPath(s2.DataFiles[1])
	if !strings.HasSuffix(extent, "-sesparse.vmdk") {
		t.Fatalf("%s is not the seSparse delta's extent", extent)
	}
	fi, err := os.Stat(extent)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(extent, fi.Size()-64<<10); err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{"--target", deltaDir, "--target-format", "vmdk", "--root", root, "-b", filepath.Join(baseDir, "disk.vmdk")}, flags...),
		"--vsphere-moref", off.MoRef, "--vsphere-snapshot", "s2", "--vsphere-delta-from", "s1")
	code, r, _, errs := runImportTest(t, args...)
	if code != jobapi.ExitPermanent || r.Reason != jobapi.ReasonInvalidImage || !strings.Contains(r.Message, "past the end of the file") || r.Target != "" {
		t.Fatalf("exit %d, result %+v, stderr %s", code, r, errs)
	}
	emptyDir(t, deltaDir)
}
