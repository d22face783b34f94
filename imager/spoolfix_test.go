package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Regression tests for the second review of import: a spooled source is
// one file and nothing else, the checksum of an OVA covers the members
// after its disk, and URLs are URLs whatever the case of their scheme.

// serveFiles serves files by base name, with Range and a size.
func serveFiles(t *testing.T, files map[string][]byte) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[path.Base(r.URL.Path)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "x", time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(ts.Close)
	return ts
}

func sha256Flag(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }

// ovaOf is a tar of the members in order; the OVF names one
// monolithicSparse disk, vm-disk1.vmdk.
func ovaOf(t *testing.T, members ...[2][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		if err := tw.WriteHeader(&tar.Header{Name: string(m[0]), Mode: 0o644, Size: int64(len(m[1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const sparseOVF = `<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><References><File ovf:href="vm-disk1.vmdk" ovf:id="file1"/></References><DiskSection><Info>x</Info><Disk ovf:capacity="1" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#monolithicSparse"/></DiskSection></Envelope>`

// scratchSecret is a scratch directory holding secret.raw, a local file
// a remote VMDK must never reach.
func scratchSecret(t *testing.T) (string, []byte) {
	scratch := t.TempDir()
	secret := bytes.Repeat([]byte("LOCALSECRET-"), 1<<20/12+1)[:1<<20]
	if err := os.WriteFile(filepath.Join(scratch, "secret.raw"), secret, 0o600); err != nil {
		t.Fatal(err)
	}
	return scratch, secret
}

// flatDescriptor names secret.raw as its one flat extent.
var flatDescriptor = []byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 2048 FLAT \"secret.raw\" 0\n\nddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"2\"\nddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\n")

// wantSpoolAlone: the import failed, saying the spooled VMDK names other
// files, and wrote nothing of the local secret.
func wantSpoolAlone(t *testing.T, what string, code int, msg, errs, out string) {
	t.Helper()
	got, _ := os.ReadFile(out)
	if code == 0 || bytes.Contains(got, []byte("LOCALSECRET-")) {
		t.Errorf("%s: exit %d: the remote VMDK read the local file secret.raw in the scratch directory\n%s", what, code, errs)
	}
	if !strings.Contains(msg, "names other files") {
		t.Errorf("%s: message %q does not say the spooled VMDK names other files", what, msg)
	}
}

// A descriptor that reaches the spool (gzip-compressed over HTTP, an OVA
// member) names secret.raw: the spool's own directory is the scratch
// directory, so opened as a local VMDK it imported that local file.
func TestSpooledDescriptorReadsNoScratchFile(t *testing.T) {
	scratch, _ := scratchSecret(t)
	ova := ovaOf(t, [2][]byte{[]byte("vm.ovf"), []byte(sparseOVF)}, [2][]byte{[]byte("vm-disk1.vmdk"), flatDescriptor})
	ts := serveFiles(t, map[string][]byte{"d.vmdk.gz": gzipBytes(t, flatDescriptor), "vm.ova": ova})
	for _, name := range []string{"d.vmdk.gz", "vm.ova"} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, "--scratch-dir", scratch, ts.URL+"/"+name)
		wantSpoolAlone(t, name, code, r.Message, errs, filepath.Join(dir, "disk.img"))
	}
}

// a57f8ac's fallback: a sparse file from a URL that names no file (ending
// in /) is imported from the spool alone; its embedded descriptor,
// rewritten to name secret.raw, must not reach the scratch directory.
func TestSlashURLSparseReadsNoScratchFile(t *testing.T) {
	f := getFixture(t)
	scratch, _ := scratchSecret(t)
	sp := bytes.Clone(f.sparse)
	i := bytes.Index(sp, []byte("RW "))
	j := i + bytes.IndexByte(sp[i:], '\n')
	// Two lines: with one, the line is the file itself whatever it names.
	repl := []byte("RW 2048 FLAT \"secret.raw\" 0\nRW 2048 FLAT \"secret.raw\" 0")
	rest := bytes.Clone(sp[j:])
	copy(sp[i:], repl)
	copy(sp[i+len(repl):], rest[:len(rest)-(len(repl)-(j-i))])
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "x", time.Time{}, bytes.NewReader(sp))
	}))
	defer ts.Close()
	dir := t.TempDir()
	code, r, _, errs := runImportTest(t, "--target", dir, "--scratch-dir", scratch, "--checksum", sha256Flag(sp), ts.URL+"/download/")
	wantSpoolAlone(t, "/download/", code, r.Message, errs, filepath.Join(dir, "disk.img"))
}

// What is spooled alone still imports: a monolithicSparse disk (its
// embedded descriptor names its original file, not the spool's name) in
// an OVA, gzip- or zstd-compressed, at a URL ending in /, over HTTP with
// the right --checksum.
func TestSpooledSparseImportsAlone(t *testing.T) {
	f := getFixture(t)
	ova := ovaOf(t, [2][]byte{[]byte("vm.ovf"), []byte(sparseOVF)}, [2][]byte{[]byte("vm-disk1.vmdk"), f.sparse}, [2][]byte{[]byte("vm.mf"), manifestOf("SHA1", [2][]byte{[]byte("vm.ovf"), []byte(sparseOVF)}, [2][]byte{[]byte("vm-disk1.vmdk"), f.sparse})})
	files := map[string][]byte{"vm.ova": ova, "s.vmdk.gz": gzipBytes(t, f.sparse), "s.vmdk.zst": zstdBytes(t, f.sparse), "download": f.sparse}
	ts := serveFiles(t, files)
	for name, b := range files {
		url := ts.URL + "/" + name
		if name == "download" {
			url += "/"
		}
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, "--scratch-dir", t.TempDir(), "--checksum", sha256Flag(b), url)
		if code != 0 {
			t.Errorf("%s: exit %d reason %s msg %s\n%s", name, code, r.Reason, r.Message, errs)
			continue
		}
		if !r.Spooled {
			t.Errorf("%s: not spooled", name)
		}
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	}
}

// An OVA whose sparse disk is not its last member, over HTTP with the
// OVA's right --checksum: the checksum was taken when the disk's member
// ended, before the members after it went through the hash (a false
// ChecksumMismatch), and a wrong checksum must still fail.
func TestOVASparseNotLastChecksum(t *testing.T) {
	f := getFixture(t)
	ova := ovaOf(t, [2][]byte{[]byte("vm.ovf"), []byte(sparseOVF)}, [2][]byte{[]byte("vm-disk1.vmdk"), f.sparse}, [2][]byte{[]byte("big.iso"), bytes.Repeat([]byte{1}, 4<<20)})
	ts := serveFiles(t, map[string][]byte{"vm.ova": ova})
	dir := t.TempDir()
	code, r, _, errs := runImportTest(t, "--target", dir, "--scratch-dir", t.TempDir(), "--checksum", sha256Flag(ova), ts.URL+"/vm.ova")
	if code != 0 {
		t.Fatalf("exit %d reason %s msg %s\n%s", code, r.Reason, r.Message, errs)
	}
	wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)

	// The same from stdin.
	dir = t.TempDir()
	cmd := imagerCmd("import", "--target", dir, "--scratch-dir", t.TempDir(), "--checksum", sha256Flag(ova), "-")
	cmd.Stdin = bytes.NewReader(ova)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("stdin: %v %s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "disk.img")); !bytes.Equal(got, f.raw) {
		t.Fatal("stdin: content differs")
	}

	dir = t.TempDir()
	code, r, _, _ = runImportTest(t, "--target", dir, "--scratch-dir", t.TempDir(), "--checksum", sha256Flag(ova[:len(ova)-1]), ts.URL+"/vm.ova")
	if code == 0 || !strings.Contains(r.Message, "sha256") {
		t.Errorf("a wrong checksum: exit %d msg %s", code, r.Message)
	}
	if fi, err := os.Stat(filepath.Join(dir, "disk.img")); err == nil && fi.Size() > 0 {
		t.Errorf("a wrong checksum: %d bytes written", fi.Size())
	}
}

// A scheme in upper case is still a URL: HTTPS://user:pass@host/... was a
// local path ("no such file"), skipping the refusal of credentials in the
// URL, for each command that reads URLs.
func TestUpperCaseSchemeIsURL(t *testing.T) {
	for _, cmd := range [][]string{{"import", "--target", t.TempDir()}, {"info"}, {"convert", "-O", "raw"}} {
		args := append(cmd, "HTTPS://admin:s3cretPW@127.0.0.1:1/vm.vmdk?sig=TOKENVAL")
		if cmd[0] == "convert" {
			args = append(args, filepath.Join(t.TempDir(), "o.raw"))
		}
		code, out, errs := imager(args...)
		if code == 0 || !strings.Contains(out+errs, "credentials in the URL") {
			t.Errorf("%s: exit %d: not refused as credentials in a URL: %s %s", cmd[0], code, out, errs)
		}
		if strings.Contains(out+errs, "s3cretPW") || strings.Contains(out+errs, "TOKENVAL") {
			t.Errorf("%s: leaks: %s %s", cmd[0], out, errs)
		}
	}
}
