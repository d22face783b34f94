package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// OVAs as exporters write them, built here: chunked files, manifests
// before or after the disks, several disks imported with --ova-disk all.

// member is one file of a test OVA.
type member = [2][]byte

func m(name string, data []byte) member { return member{[]byte(name), data} }

// manifestOf is a manifest listing each member's digest with alg.
func manifestOf(alg string, members ...member) []byte {
	var b bytes.Buffer
	for _, mb := range members {
		var h hash.Hash
		switch alg {
		case "SHA1":
			h = sha1.New()
		case "SHA512":
			h = sha512.New()
		default:
			h = sha256.New()
		}
		h.Write(mb[1])
		fmt.Fprintf(&b, "%s(%s)= %x\n", alg, mb[0], h.Sum(nil))
	}
	return b.Bytes()
}

// ovfFile is a File of the OVF's References: its attributes as written,
// and its disk's capacity.
type ovfFile struct {
	href, attrs string
	capacity    int
}

// ovfOf is an OVF descriptor of disks vmdisk1, vmdisk2, ... one per file.
func ovfOf(files ...ovfFile) []byte {
	var refs, disks strings.Builder
	for i, f := range files {
		fmt.Fprintf(&refs, `<File ovf:href="%s" ovf:id="file%d" %s/>`, f.href, i+1, f.attrs)
		fmt.Fprintf(&disks, `<Disk ovf:capacity="%d" ovf:diskId="vmdisk%d" ovf:fileRef="file%d" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>`, f.capacity, i+1, i+1)
	}
	return []byte(`<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
<References>` + refs.String() + `</References>
<DiskSection><Info>Virtual disk information</Info>` + disks.String() + `</DiskSection>
<VirtualSystem ovf:id="vm"><Info>A VM</Info><Name>vm</Name></VirtualSystem>
</Envelope>`)
}

// chunks splits b into members name.000000000, ... of size each.
func chunks(name string, b []byte, size int) []member {
	var out []member
	for i := 0; len(b) > 0; i++ {
		n := min(size, len(b))
		out = append(out, m(fmt.Sprintf("%s.%09d", name, i), b[:n]))
		b = b[n:]
	}
	return out
}

// chunkSize3 splits b into 3 chunks, the last shorter.
func chunkSize3(b []byte) int { return len(b)/3 + 4097 }

// oddGzip is b gzip-compressed to an odd length, so its last chunk can be
// odd (a stream's own length is a multiple of 512).
func oddGzip(t *testing.T, b []byte) []byte {
	for level := gzip.BestSpeed; level <= gzip.BestCompression; level++ {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, level)
		zw.Write(b)
		zw.Close()
		if buf.Len()%2 == 1 {
			return buf.Bytes()
		}
	}
	t.Fatal("no gzip level gives an odd length")
	return nil
}

func writeOVA(t *testing.T, b []byte) string {
	p := filepath.Join(t.TempDir(), "vm.ova")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A file stored in 3 chunks (ovf:chunkSize; the last shorter, of odd
// size: the gzip-compressed stream, compressed before it was chunked as
// DSP0243 says) imports as the file they join into, with ovf:size and
// without, from a file and from stdin.
func TestImportOVAChunked(t *testing.T) {
	f := getFixture(t)
	for _, c := range []struct{ file, attrs string }{
		{string(f.stream), ""},
		{string(oddGzip(t, f.stream)), `ovf:compression="gzip"`},
	} {
		file := []byte(c.file)
		size := chunkSize3(file)
		parts := chunks("vm-disk1.vmdk", file, size)
		if last := len(parts[len(parts)-1][1]); len(parts) != 3 || last >= size || c.attrs != "" && last%2 == 0 {
			t.Fatalf("%d chunks, the last of %d bytes", len(parts), last)
		}
		for _, attrs := range []string{
			fmt.Sprintf(`%s ovf:chunkSize="%d" ovf:size="%d"`, c.attrs, size, len(file)),
			fmt.Sprintf(`%s ovf:chunkSize="%d"`, c.attrs, size),
		} {
			env := ovfOf(ovfFile{"vm-disk1.vmdk", attrs, len(f.raw)})
			ova := ovaOf(t, append([]member{m("vm.ovf", env)}, append(parts, m("vm.iso", []byte("after the disk")))...)...)
			dir := t.TempDir()
			code, r, _, errs := runImportTest(t, "--target", dir, writeOVA(t, ova))
			wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)

			dir = t.TempDir()
			cmd := imagerCmd("import", "--target", dir, "-")
			cmd.Stdin = bytes.NewReader(ova)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: stdin: %v %s", attrs, err, out)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "disk.img")); !bytes.Equal(got, f.raw) {
				t.Fatalf("%s: stdin: content differs", attrs)
			}
		}
	}
}

// Chunks that are not the file in order (one missing, two swapped, one
// twice, one after the last, one too big, a short one before the last,
// fewer bytes than ovf:size) are a damaged OVA: nothing is written. The
// disk is raw, which has no structure of its own to give a wrong order
// away: only the chunk checks can.
func TestOVAChunksOutOfOrder(t *testing.T) {
	raw := make([]byte, 3<<20+777)
	rand.New(rand.NewSource(7)).Read(raw)
	size := chunkSize3(raw)
	p := chunks("vm-disk1.vmdk", raw, size)
	sized := fmt.Sprintf(`ovf:chunkSize="%d" ovf:size="%d"`, size, len(raw))
	unsized := fmt.Sprintf(`ovf:chunkSize="%d"`, size)
	short := m("vm-disk1.vmdk.000000001", p[1][1][:size-2])
	big := m("vm-disk1.vmdk.000000000", append(bytes.Clone(p[0][1]), 0))
	ovaWith := func(attrs string, parts []member) string {
		env := ovfOf(ovfFile{"vm-disk1.vmdk", attrs, len(raw)})
		return writeOVA(t, ovaOf(t, append([]member{m("vm.ovf", env)}, parts...)...))
	}
	for _, attrs := range []string{sized, unsized} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, ovaWith(attrs, p))
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), raw)
	}
	lastShort := m("vm-disk1.vmdk.000000002", p[2][1][:len(p[2][1])-1])
	iso := m("vm.iso", []byte("another file"))
	// says, when set, is what the refusal must say: each case is the one
	// check that refuses it.
	for name, c := range map[string]struct {
		attrs string
		parts []member
		says  string
	}{
		"missing":             {sized, []member{p[0], p[2]}, "missing, repeated or out of order"},
		"missing unsized":     {unsized, []member{p[0], p[2]}, "missing, repeated or out of order"},
		"missing first":       {unsized, []member{p[1], p[2]}, "comes before"},
		"only chunk 1":        {unsized, []member{m("vm-disk1.vmdk.000000001", p[2][1])}, "comes before"},
		"swapped":             {sized, []member{p[0], p[2], p[1]}, ""},
		"swapped first":       {sized, []member{p[1], p[0], p[2]}, ""},
		"twice":               {unsized, []member{p[0], p[1], p[1], p[2]}, ""},
		"again at the end":    {unsized, []member{p[0], p[1], p[2], p[0]}, "after the last chunk"},
		"extra":               {unsized, []member{p[0], p[1], p[2], m("vm-disk1.vmdk.000000003", []byte("x"))}, "after the last chunk"},
		"too big":             {unsized, []member{big, p[1], p[2]}, "ovf:chunkSize is"},
		"short not last":      {unsized, []member{p[0], short, p[2]}, ""},
		"archive ends":        {sized, []member{p[0], p[1]}, "the archive ends after"},
		"cut before a member": {sized, []member{p[0], p[1], iso}, "instead of its chunk"},
		"last short of size":  {sized, []member{p[0], p[1], lastShort}, "not its ovf:size"},
		"more than size":      {fmt.Sprintf(`ovf:chunkSize="%d" ovf:size="%d"`, size, size+10), p, "more than its ovf:size"},
		"also unchunked":      {unsized, []member{p[0], p[1], p[2], m("vm-disk1.vmdk", raw)}, ""},
		"unchunked only":      {unsized, []member{m("vm-disk1.vmdk", p[2][1])}, "although its File has ovf:chunkSize"},
		"unchunked twice":     {"", []member{m("vm-disk1.vmdk", raw), m("vm-disk1.vmdk", p[0][1])}, "twice"},
	} {
		dir := t.TempDir()
		code, r, _, _ := runImportTest(t, "--target", dir, ovaWith(c.attrs, c.parts))
		if code != jobapi.ExitPermanent || r.Reason != jobapi.ReasonInvalidImage || !strings.Contains(r.Message, c.says) {
			t.Errorf("%s: exit %d %s: %s", name, code, r.Reason, r.Message)
		}
		emptyDir(t, dir)
	}
}

// A manifest verifies the descriptor and the disk imported, whether it
// comes before the disks or last, with each algorithm; a member that does
// not match it fails ChecksumMismatch with nothing left written; one it
// does not list cannot be verified and fails the same; a malformed one is
// a damaged OVA. A .cert member is ignored.
func TestImportOVAManifest(t *testing.T) {
	f := getFixture(t)
	env := ovfOf(ovfFile{"vm-disk1.vmdk", "", len(f.raw)}, ovfFile{"vm-disk2.vmdk", "", len(f.raw)})
	ovf, d1, d2 := m("vm.ovf", env), m("vm-disk1.vmdk", f.stream), m("vm-disk2.vmdk", []byte("not read, not hashed"))
	cert := m("vm.cert", []byte("-----BEGIN CERTIFICATE-----\n"))
	altered := m("vm-disk1.vmdk", append(bytes.Clone(f.stream), make([]byte, 512)...)) // padding after the stream: it still imports
	bad := func(b []byte) []byte {                                                     // the first line's digest, one hex digit changed
		i := bytes.Index(b, []byte("= ")) + 2
		b[i] = "10"[min(1, int(b[i]-'0'))]
		return b
	}
	good := map[string][]member{}
	for _, alg := range []string{"SHA1", "SHA256", "SHA512"} {
		mf := m("vm.mf", manifestOf(alg, ovf, d1, m(string(d2[0]), []byte("other bytes"))))
		good["before "+alg] = []member{ovf, mf, d1, d2, cert}
		good["last "+alg] = []member{ovf, d1, d2, mf, cert}
	}
	for name, members := range good {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, writeOVA(t, ovaOf(t, members...)))
		if code != 0 {
			t.Errorf("%s: exit %d %s: %s", name, code, r.Reason, r.Message)
			continue
		}
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	}
	failures := map[string]struct {
		members []member
		reason  string
	}{
		"disk altered, manifest before": {[]member{ovf, m("vm.mf", manifestOf("SHA256", ovf, d1)), altered}, jobapi.ReasonChecksumMismatch},
		"disk altered, manifest last":   {[]member{ovf, altered, m("vm.mf", manifestOf("SHA256", ovf, d1))}, jobapi.ReasonChecksumMismatch},
		"descriptor, manifest before":   {[]member{ovf, m("vm.mf", bad(manifestOf("SHA1", ovf, d1))), d1}, jobapi.ReasonChecksumMismatch},
		"descriptor, manifest last":     {[]member{ovf, d1, m("vm.mf", bad(manifestOf("SHA512", ovf, d1)))}, jobapi.ReasonChecksumMismatch},
		"disk unlisted, before":         {[]member{ovf, m("vm.mf", manifestOf("SHA256", ovf)), d1}, jobapi.ReasonChecksumMismatch},
		"disk unlisted, last":           {[]member{ovf, d1, m("vm.mf", manifestOf("SHA256", ovf))}, jobapi.ReasonChecksumMismatch},
		"malformed":                     {[]member{ovf, m("vm.mf", append(manifestOf("SHA256", ovf, d1), "SHA256 vm.ovf 00\n"...)), d1}, jobapi.ReasonInvalidImage},
		"malformed last":                {[]member{ovf, d1, m("vm.mf", append(manifestOf("SHA256", ovf, d1), "MD5(vm.iso)= d41d8cd98f00b204e9800998ecf8427e\n"...))}, jobapi.ReasonInvalidImage},
		"short digest":                  {[]member{ovf, m("vm.mf", []byte("SHA256(vm.ovf)= 00\n")), d1}, jobapi.ReasonInvalidImage},
		"two manifests":                 {[]member{ovf, m("vm.mf", manifestOf("SHA256", ovf, d1)), d1, m("x.mf", manifestOf("SHA256", ovf, d1))}, jobapi.ReasonInvalidImage},
	}
	for name, c := range failures {
		dir := t.TempDir()
		code, r, _, _ := runImportTest(t, "--target", dir, writeOVA(t, ovaOf(t, c.members...)))
		if code != jobapi.ExitPermanent || r.Reason != c.reason || !r.Permanent {
			t.Errorf("%s: exit %d %s: %s", name, code, r.Reason, r.Message)
		}
		emptyDir(t, dir)
	}
}

// allOVA is an OVA of three disks: a stream, a sparse disk (spooled) under
// a name that is no safe directory name, and a raw disk in 3 chunks whose
// members come before the sparse disk's; its manifest before the disks,
// or last.
func allOVA(t *testing.T, f *importFixture, raw []byte, manifestLast bool) []byte {
	size := chunkSize3(raw)
	env := ovfOf(ovfFile{"vm-disk1.vmdk", "", len(f.raw)}, ovfFile{"data disk.vmdk", "", len(f.raw)},
		ovfFile{"vm-disk3.img", fmt.Sprintf(`ovf:chunkSize="%d" ovf:size="%d"`, size, len(raw)), len(raw)})
	disks := append([]member{m("vm-disk1.vmdk", f.stream)}, chunks("vm-disk3.img", raw, size)...)
	disks = append(disks, m("data disk.vmdk", f.sparse))
	mf := m("vm.mf", manifestOf("SHA256", append([]member{m("vm.ovf", env)}, disks...)...))
	members := []member{m("vm.ovf", env), mf}
	if manifestLast {
		members = members[:1]
	}
	members = append(members, disks...)
	if manifestLast {
		members = append(members, mf)
	}
	return ovaOf(t, append(members, m("vm.cert", []byte("a certificate")))...)
}

// --ova-disk all writes every disk of the OVA, in member order, each into
// its directory named from the OVF, from a file and from stdin, with the
// manifest before or after the disks; the result lists them.
func TestImportOVAAll(t *testing.T) {
	f := getFixture(t)
	raw := make([]byte, 1<<20+333)
	rand.New(rand.NewSource(3)).Read(raw)
	want := []struct {
		name string
		data []byte
	}{{"vm-disk1.vmdk", f.raw}, {"vm-disk3.img", raw}, {"data_disk.vmdk", f.raw}}
	for _, last := range []bool{false, true} {
		ova := allOVA(t, f, raw, last)
		src := writeOVA(t, ova)
		ts := serveFiles(t, map[string][]byte{"vm.ova": ova})
		for _, from := range []string{"file", "stdin", "http"} {
			dir := t.TempDir()
			res := filepath.Join(t.TempDir(), "result.json")
			args := []string{"import", "--result-file", res, "--target", dir, "--scratch-dir", t.TempDir(), "--checksum", sha256Flag(ova), "--ova-disk", "all", src}
			if from == "http" {
				args[len(args)-1] = ts.URL + "/vm.ova"
			}
			var code int
			var errs string
			if from == "stdin" {
				args[len(args)-1] = "-"
				cmd := imagerCmd(args...)
				cmd.Stdin = bytes.NewReader(ova)
				out, err := cmd.CombinedOutput()
				errs = string(out)
				if err != nil {
					code = 1
				}
			} else {
				code, _, errs = imager(args...)
			}
			b, _ := os.ReadFile(res)
			r, err := jobapi.Parse(string(b))
			if err != nil || code != 0 {
				t.Fatalf("%s, manifest last %v: exit %d %v %s", from, last, code, err, errs)
			}
			if len(r.Disks) != len(want) {
				t.Fatalf("%s: result lists %+v", from, r.Disks)
			}
			for i, w := range want {
				wantImported(t, code, r, errs, filepath.Join(dir, w.name, "disk.img"), w.data)
				d := r.Disks[i]
				if d.Name != w.name || d.VirtualSize != int64(len(w.data)) || d.AllocatedBytes <= 0 {
					t.Errorf("%s: disk %d: %+v", from, i, d)
				}
			}
			if s := sha256.Sum256(f.stream); r.Disks[0].SHA256 != hex.EncodeToString(s[:]) || r.Disks[1].SHA256 != "" {
				t.Errorf("%s: sha256 %q %q", from, r.Disks[0].SHA256, r.Disks[1].SHA256)
			}
			if e, _ := os.ReadDir(dir); len(e) != len(want) {
				t.Errorf("%s: %s holds %v", from, dir, e)
			}
		}
	}

	// --target-format vmdk: each directory holds its disk.vmdk.
	dir := t.TempDir()
	code, r, _, errs := runImportTest(t, "--target", dir, "--scratch-dir", t.TempDir(), "--target-format", "vmdk", "--ova-disk", "all", writeOVA(t, allOVA(t, f, raw, false)))
	if code != 0 {
		t.Fatalf("vmdk: exit %d %+v %s", code, r, errs)
	}
	for _, w := range want {
		d, err := vmdk.Open(filepath.Join(dir, w.name, "disk.vmdk"), vmdk.Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, d.Size())
		_, err = d.ReadAt(got, 0)
		d.Close()
		// A VMDK holds whole sectors: the raw disk's last one is padded
		// with zeros.
		padded := append(bytes.Clone(w.data), make([]byte, (512-len(w.data)%512)%512)...)
		if err != nil || !bytes.Equal(got, padded) {
			t.Errorf("vmdk: %s differs (%v): %d bytes, want %d", w.name, err, len(got), len(padded))
		}
	}
}

// --ova-disk all writes nothing when the OVA fails its manifest (after
// the disks), when two disks would share a directory, when a disk's
// file is missing; a source that is no OVA, and a block target, are
// refused.
func TestImportOVAAllRefused(t *testing.T) {
	f := getFixture(t)
	raw := make([]byte, 1<<20+333)
	good := allOVA(t, f, raw, true)
	env := ovfOf(ovfFile{"vm-disk1.vmdk", "", len(f.raw)}, ovfFile{"vm-disk2.vmdk", "", len(f.raw)})
	var many []ovfFile
	for i := range 257 {
		many = append(many, ovfFile{fmt.Sprintf("d%d.vmdk", i), "", len(f.raw)})
	}
	altered := bytes.Clone(good)
	i := bytes.LastIndex(altered, []byte("SHA256(data disk.vmdk)= ")) + len("SHA256(data disk.vmdk)= ")
	altered[i] = "10"[min(1, int(altered[i]-'0'))]
	for name, c := range map[string]struct {
		ova    []byte
		reason string
		flags  []string
	}{
		"manifest last, altered": {altered, jobapi.ReasonChecksumMismatch, nil},
		"wrong --checksum":       {good, jobapi.ReasonChecksumMismatch, []string{"--checksum", sha256Flag(altered)}},
		"one directory": {ovaOf(t, m("vm.ovf", ovfOf(ovfFile{"a/disk.vmdk", "", len(f.raw)}, ovfFile{"b/DISK.vmdk", "", len(f.raw)})),
			m("a/disk.vmdk", f.stream), m("b/DISK.vmdk", f.stream)), jobapi.ReasonInvalidArguments, nil},
		"a disk missing": {ovaOf(t, m("vm.ovf", env), m("vm-disk1.vmdk", f.stream)), jobapi.ReasonInvalidImage, nil},
		"257 disks":      {ovaOf(t, m("vm.ovf", ovfOf(many...))), jobapi.ReasonInvalidArguments, nil},
	} {
		dir := t.TempDir()
		args := append([]string{"--target", dir, "--scratch-dir", t.TempDir(), "--ova-disk", "all"}, c.flags...)
		code, r, _, _ := runImportTest(t, append(args, writeOVA(t, c.ova))...)
		if code != jobapi.ExitPermanent || r.Reason != c.reason || !r.Permanent {
			t.Errorf("%s: exit %d %s: %s", name, code, r.Reason, r.Message)
		}
		emptyDir(t, dir)
	}
	// Over HTTP the source's checksum is known only once the disks are
	// written: they are removed again.
	ts := serveFiles(t, map[string][]byte{"vm.ova": good})
	dir := t.TempDir()
	code, r, _, _ := runImportTest(t, "--target", dir, "--scratch-dir", t.TempDir(), "--ova-disk", "all", "--checksum", sha256Flag(altered), ts.URL+"/vm.ova")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonChecksumMismatch)
	emptyDir(t, dir)

	src := filepath.Join(t.TempDir(), "disk.raw")
	os.WriteFile(src, raw, 0o644)
	code, r, _, _ = runImportTest(t, "--target", t.TempDir(), "--ova-disk", "all", src)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	code, r, _, _ = runImportTest(t, "--target", t.TempDir(), "--ova-disk", "all", "--target-mode", "block", writeOVA(t, good))
	wantFailed(t, code, r, jobapi.ExitUsage, jobapi.ReasonInvalidArguments)
}
