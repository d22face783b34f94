package main

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// An OVA that lacks what its descriptor or manifest says it holds is
// refused, never imported short: a chunked file without ovf:size whose
// last member is a full chunk (the archive cut at a member's boundary, a
// chunk missing, another file after it), a chunk the manifest lists that
// never comes, any file the manifest lists that the archive lacks, a
// one-member file of another size than its ovf:size. Only a manifest read
// before the chunks can say a full chunk is the last.
func TestOVACutAtMemberBoundary(t *testing.T) {
	raw := make([]byte, 3<<20+777)
	rand.New(rand.NewSource(7)).Read(raw)
	size := chunkSize3(raw)
	p := chunks("vm-disk1.vmdk", raw, size)
	unsized := ovfOf(ovfFile{"vm-disk1.vmdk", fmt.Sprintf(`ovf:chunkSize="%d"`, size), len(raw)})
	ovf := m("vm.ovf", unsized)
	two := ovaOf(t, ovf, p[0], p[1])
	noEnd := two[:len(two)-1024] // no end-of-archive blocks: cut right after chunk 1
	iso := m("vm.iso", []byte("another file"))
	single := func(attrs string, member []byte) []byte {
		return ovaOf(t, m("vm.ovf", ovfOf(ovfFile{"vm-disk1.vmdk", attrs, len(raw)})), m("vm-disk1.vmdk", member))
	}
	nvram := m("vm.nvram", []byte("nvram"))
	for name, c := range map[string]struct {
		ova  []byte
		says string
	}{
		"cut after a full chunk":        {noEnd, "Give its File ovf:size, or the archive is incomplete"},
		"ends after a full chunk":       {two, "Give its File ovf:size"},
		"a file after a full chunk":     {ovaOf(t, ovf, p[0], p[1], iso), `and "vm.iso" follows it`},
		"listed chunk missing":          {ovaOf(t, ovf, m("vm.mf", manifestOf("SHA256", ovf, p[0], p[1], p[2])), p[0], p[1]), "Give its File ovf:size"},
		"listed file missing":           {ovaOf(t, ovf, m("vm.mf", manifestOf("SHA256", ovf, p[0], p[1], p[2], nvram)), p[0], p[1], p[2]), `lists ["vm.nvram"], which the archive lacks`},
		"listed file missing, mf last":  {ovaOf(t, ovf, p[0], p[1], p[2], m("vm.mf", manifestOf("SHA256", ovf, nvram, p[0], p[1], p[2]))), `lists ["vm.nvram"], which the archive lacks`},
		"member shorter than ovf:size":  {single(fmt.Sprintf(`ovf:size="%d"`, len(raw)), raw[:len(raw)/2]), fmt.Sprintf("holds %d bytes, but its File's ovf:size is %d", len(raw)/2, len(raw))},
		"member longer than ovf:size":   {single(fmt.Sprintf(`ovf:size="%d"`, len(raw)-1), raw), "but its File's ovf:size is"},
		"chunks short of ovf:size, cut": {ovaOf(t, m("vm.ovf", ovfOf(ovfFile{"vm-disk1.vmdk", fmt.Sprintf(`ovf:chunkSize="%d" ovf:size="%d"`, size, len(raw)), len(raw)})), p[0], p[1])[:len(two)-1024], "the archive ends after"},
	} {
		dir := t.TempDir()
		code, r, _, _ := runImportTest(t, "--target", dir, writeOVA(t, c.ova))
		if code != jobapi.ExitPermanent || r.Reason != jobapi.ReasonInvalidImage || !r.Permanent || !strings.Contains(r.Message, c.says) {
			t.Errorf("%s: exit %d %s: %s", name, code, r.Reason, r.Message)
		}
		emptyDir(t, dir)
	}

	// A file of exactly two full chunks: the manifest before them lists
	// no third, so the second is the last; as is one whose ovf:size it
	// reaches.
	exact := raw[:2*size]
	q := chunks("vm-disk1.vmdk", exact, size)
	sized := m("vm.ovf", ovfOf(ovfFile{"vm-disk1.vmdk", fmt.Sprintf(`ovf:chunkSize="%d" ovf:size="%d"`, size, len(exact)), len(exact)}))
	unsizedExact := m("vm.ovf", ovfOf(ovfFile{"vm-disk1.vmdk", fmt.Sprintf(`ovf:chunkSize="%d"`, size), len(exact)}))
	for name, ova := range map[string][]byte{
		"manifest first": ovaOf(t, unsizedExact, m("vm.mf", manifestOf("SHA256", unsizedExact, q[0], q[1])), q[0], q[1], iso),
		"ovf:size":       ovaOf(t, sized, q[0], q[1], iso),
		"single member":  single(fmt.Sprintf(`ovf:size="%d"`, len(raw)), raw),
	} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, writeOVA(t, ova))
		want := exact
		if name == "single member" {
			want = raw
		}
		if code != 0 {
			t.Fatalf("%s: exit %d %s: %s", name, code, r.Reason, r.Message)
		}
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), want)
	}
}

// An OVA cut inside a member (a download or copy stopped short) fails as
// a source that ended early does, SourceError and transient, naming the
// member and how much of it came; from a file and from stdin, for a raw
// disk, a chunk of one and a streamOptimized disk; and cut inside a tar
// header or the descriptor.
func TestOVACutInsideMember(t *testing.T) {
	f := getFixture(t)
	raw := make([]byte, 1<<20)
	rand.New(rand.NewSource(5)).Read(raw)
	size := chunkSize3(raw)
	env := ovfOf(ovfFile{"d.img", "", len(raw)})
	// at is where member's data starts in the tar: after the descriptor's
	// header and blocks and the member's header.
	at := func(env []byte, before int) int { return 512 + (len(env)+511)/512*512 + before + 512 }
	chunked := ovfOf(ovfFile{"d.img", fmt.Sprintf(`ovf:chunkSize="%d"`, size), len(raw)})
	p := chunks("d.img", raw, size)
	stream := ovfOf(ovfFile{"d.vmdk", "", len(f.raw)})
	for name, c := range map[string]struct {
		ova    []byte
		start  int // where the member cut starts
		member string
		size   int
	}{
		"raw":    {ovaOf(t, m("vm.ovf", env), m("d.img", raw)), at(env, 0), "d.img", len(raw)},
		"chunk":  {ovaOf(t, m("vm.ovf", chunked), p[0], p[1], p[2]), at(chunked, 512+(size+511)/512*512), "d.img.000000001", size},
		"stream": {ovaOf(t, m("vm.ovf", stream), m("d.vmdk", f.stream)), at(stream, 0), "d.vmdk", len(f.stream)},
	} {
		got := c.size / 3
		cut := c.ova[:c.start+got]
		says := fmt.Sprintf("the archive ends inside member %q after %d of its %d bytes", c.member, got, c.size)
		dir := t.TempDir()
		code, r, _, _ := runImportTest(t, "--target", dir, writeOVA(t, cut))
		wantFailed(t, code, r, jobapi.ExitTransient, jobapi.ReasonSourceError)
		if !strings.Contains(r.Message, says) {
			t.Errorf("%s: %s, want %s", name, r.Message, says)
		}
		emptyDir(t, dir)

		res := filepath.Join(t.TempDir(), "result.json")
		cmd := imagerCmd("import", "--result-file", res, "--target", t.TempDir(), "-")
		cmd.Stdin = bytes.NewReader(cut)
		out, _ := cmd.CombinedOutput()
		b, _ := os.ReadFile(res)
		if r, err := jobapi.Parse(string(b)); err != nil || cmd.ProcessState.ExitCode() != jobapi.ExitTransient || r.Reason != jobapi.ReasonSourceError || !strings.Contains(r.Message, says) {
			t.Errorf("%s: stdin: exit %d %v %s", name, cmd.ProcessState.ExitCode(), err, out)
		}
	}
	// Cut inside the disk's tar header, and inside the descriptor.
	ova := ovaOf(t, m("vm.ovf", env), m("d.img", raw))
	for _, cut := range []int{at(env, 0) - 300, 700} {
		code, r, _, _ := runImportTest(t, "--target", t.TempDir(), writeOVA(t, ova[:cut]))
		wantFailed(t, code, r, jobapi.ExitTransient, jobapi.ReasonSourceError)
		if !strings.Contains(r.Message, "the archive ends inside a member or its header") {
			t.Errorf("cut at %d: %s", cut, r.Message)
		}
	}
}

// A raw disk's file is the disk: one of another length than its Disk's
// ovf:capacity (in bytes, or "byte * 2^N") is refused, InvalidImage, with
// nothing written; one whose capacity imager cannot read (a ${property},
// other units) imports as it is, as does a VMDK (its own capacity is the
// disk's).
func TestImportOVARawCapacity(t *testing.T) {
	f := getFixture(t)
	raw := make([]byte, 1<<20)
	rand.New(rand.NewSource(17)).Read(raw)
	ovaWith := func(disk []byte, capacity string) string {
		env := fmt.Appendf(nil, `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
<References><File ovf:href="d.img" ovf:id="file1"/></References>
<DiskSection><Info>d</Info><Disk %s ovf:diskId="vmdisk1" ovf:fileRef="file1"/></DiskSection>
<VirtualSystem ovf:id="vm"><Info>A VM</Info><Name>vm</Name></VirtualSystem>
</Envelope>`, capacity)
		return writeOVA(t, ovaOf(t, m("vm.ovf", env), m("d.img", disk)))
	}
	for _, capacity := range []string{
		fmt.Sprintf(`ovf:capacity="%d"`, len(raw)),
		`ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^20"`,
		`ovf:capacity="${disk.size}"`,
		`ovf:capacity="1" ovf:capacityAllocationUnits="MegaBytes"`,
		`ovf:capacity="3" ovf:capacityAllocationUnits="byte * 2^70"`,
	} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, ovaWith(raw, capacity))
		if code != 0 {
			t.Fatalf("%s: exit %d %s: %s", capacity, code, r.Reason, r.Message)
		}
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), raw)
	}
	dir := t.TempDir()
	code, r, _, errs := runImportTest(t, "--target", dir, ovaWith(f.stream, `ovf:capacity="1"`))
	wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)

	for capacity, says := range map[string]string{
		fmt.Sprintf(`ovf:capacity="%d"`, len(raw)+512):                                 "a raw disk of 1048576 bytes, but its ovf:capacity is 1049088 bytes",
		`ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^20"`:                   "but its ovf:capacity is 2097152 bytes",
		`ovf:capacity="1023" ovf:capacityAllocationUnits="Byte*2^10"`:                  "but its ovf:capacity is 1047552 bytes",
		`ovf:capacity="9223372036854775807" ovf:capacityAllocationUnits="byte * 2^10"`: "overflows",
	} {
		dir := t.TempDir()
		code, r, _, _ := runImportTest(t, "--target", dir, ovaWith(raw, capacity))
		wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidImage)
		if !strings.Contains(r.Message, says) {
			t.Errorf("%s: %s", capacity, r.Message)
		}
		emptyDir(t, dir)
	}
}
