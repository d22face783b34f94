package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/test/datastore"
	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// lyingServer serves dir without validators (no ETag, no Last-Modified:
// If-Range cannot protect a re-read), answering Range requests for the
// file top with ranged instead, and plain GETs with the real file.
func lyingServer(t *testing.T, dir, top string, ranged []byte) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var topRanges atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := path.Base(r.URL.Path)
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if name == top && r.Header.Get("Range") != "" {
			topRanges.Add(1)
			b = ranged
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(ts.Close)
	return ts, &topRanges
}

// With --checksum, the URL's own file is imported from the bytes the
// checksum verified, never read again: a server handing Range requests
// another version of the file (same size, no validator to tell) cannot
// make a wrong disk pass as a verified one. A descriptor is kept in
// memory; a sparse delta naming a parent is spooled while it is hashed.
func TestImportHTTPChecksumNoReread(t *testing.T) {
	c := getHTTPChain(t)
	dir := t.TempDir()
	for _, f := range []string{"vm.vmdk", "vm-flat.vmdk", "vm-000001.vmdk", "vm-000001-delta.vmdk", "vm-000002.vmdk"} {
		b, err := os.ReadFile(filepath.Join(c.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	// vm-fla2.vmdk: another base of the same size, which a lying
	// descriptor names instead of vm-flat.vmdk.
	flat, _ := os.ReadFile(filepath.Join(dir, "vm-flat.vmdk"))
	os.WriteFile(filepath.Join(dir, "vm-fla2.vmdk"), bytes.Repeat([]byte{0xa5}, len(flat)), 0o644)
	desc, _ := os.ReadFile(filepath.Join(dir, "vm.vmdk"))
	lyingDesc := bytes.Replace(desc, []byte(`"vm-flat.vmdk"`), []byte(`"vm-fla2.vmdk"`), 1)
	// A same-size vm-000002.vmdk whose last grains differ.
	top, _ := os.ReadFile(filepath.Join(dir, "vm-000002.vmdk"))
	lyingTop := bytes.Clone(top)
	for i := len(lyingTop) - 64<<10; i < len(lyingTop); i++ {
		lyingTop[i] ^= 0xff
	}
	os.WriteFile(filepath.Join(dir, "lying-desc.vmdk"), lyingDesc, 0o644)
	os.WriteFile(filepath.Join(dir, "lying-000002.vmdk"), lyingTop, 0o644)
	for _, tc := range []struct{ name, lie string }{{"vm.vmdk", "lying-desc.vmdk"}, {"vm-000002.vmdk", "lying-000002.vmdk"}} {
		t.Run(tc.name, func(t *testing.T) {
			real, lie := rawOf(t, dir, tc.name), rawOf(t, dir, tc.lie)
			if bytes.Equal(real, lie) {
				t.Fatal("the lying version reads the same: the test would prove nothing")
			}
			b, _ := os.ReadFile(filepath.Join(dir, tc.name))
			lying, _ := os.ReadFile(filepath.Join(dir, tc.lie))
			if len(b) != len(lying) {
				t.Fatal("the lying version has another size: the size check alone would catch it")
			}
			sum := sha256.Sum256(b)
			ts, topRanges := lyingServer(t, dir, tc.name, lying)
			target := t.TempDir()
			code, r, _, errs := runImportTest(t, "--target", target, "--scratch-dir", t.TempDir(), "--checksum", "sha256:"+hex.EncodeToString(sum[:]), ts.URL+"/"+tc.name)
			wantImported(t, code, r, errs, filepath.Join(target, "disk.img"), real)
			if r.SHA256 != hex.EncodeToString(sum[:]) {
				t.Fatalf("sha256 %q", r.SHA256)
			}
			if n := topRanges.Load(); n != 0 {
				t.Fatalf("%s was read again with %d Range requests after it was hashed", tc.name, n)
			}
		})
	}
	// Without scratch space, a delta with --checksum is not read twice:
	// it is refused, saying what to give.
	sum := sha256.Sum256(top)
	ts, _ := lyingServer(t, dir, "vm-000002.vmdk", lyingTop)
	target := t.TempDir()
	code, r, _, _ := runImportTest(t, "--target", target, "--checksum", "sha256:"+hex.EncodeToString(sum[:]), ts.URL+"/vm-000002.vmdk")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	if !strings.Contains(r.Message, "--scratch-dir") {
		t.Fatalf("message %q, want --scratch-dir in it", r.Message)
	}
	emptyDir(t, target)
}

// A delta whose embedded descriptor lies past the first 64 KiB (where the
// parent it names cannot be seen before the file is read) imports with
// --checksum with its parent, as any other.
func TestImportHTTPChecksumFarDescriptor(t *testing.T) {
	c := getHTTPChain(t)
	dir := t.TempDir()
	for _, f := range []string{"vm.vmdk", "vm-flat.vmdk", "vm-000001.vmdk", "vm-000001-delta.vmdk"} {
		b, _ := os.ReadFile(filepath.Join(c.dir, f))
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	top, _ := os.ReadFile(filepath.Join(c.dir, "vm-000002.vmdk"))
	if len(top)%512 != 0 || len(top) < 128<<10 {
		t.Fatalf("vm-000002.vmdk is %d bytes: not what the test moves the descriptor to the end of", len(top))
	}
	off, size := binary.LittleEndian.Uint64(top[28:]), binary.LittleEndian.Uint64(top[36:])
	if off == 0 || size == 0 {
		t.Fatal("vm-000002.vmdk has no embedded descriptor")
	}
	text := bytes.Clone(top[off*512 : (off+size)*512])
	binary.LittleEndian.PutUint64(top[28:], uint64(len(top)/512))
	top = append(top, text...)
	os.WriteFile(filepath.Join(dir, "vm-000002.vmdk"), top, 0o644)
	want := rawOf(t, dir, "vm-000002.vmdk")
	if !bytes.Equal(want, c.top) {
		t.Fatal("qemu-img reads the moved descriptor's file differently")
	}
	sum := sha256.Sum256(top)
	_, url, creds := serveChain(t, &httpChain{dir: dir}, "vm-000002.vmdk", nil)
	target := t.TempDir()
	code, r, _, errs := runImportTest(t, append(append([]string{"--target", target, "--scratch-dir", t.TempDir(), "--checksum", "sha256:" + hex.EncodeToString(sum[:])}, creds...), url)...)
	wantImported(t, code, r, errs, filepath.Join(target, "disk.img"), want)
}

// A single sparse VMDK behind a redirect to another host (a CDN, an
// object store) imports, and info and convert read it; with credentials
// the redirect is refused and they never reach the other host.
func TestImportHTTPRedirectOtherHost(t *testing.T) {
	dir := t.TempDir()
	qemu(t, dir, "qemu-img", "create", "-f", "vmdk", "disk.vmdk", "8M")
	qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 0x3c 1M 320k", "-c", "write -P 0x7e 7M 4k", "disk.vmdk")
	want := rawOf(t, dir, "disk.vmdk")
	ds := &datastore.Server{Dir: dir, DCPath: "dc", DSName: "ds"}
	hosts := datastore.NewOtherHost(ds)
	defer hosts.Close()
	url := ds.URL(hosts.Redirect.URL, "disk.vmdk")
	target := t.TempDir()
	code, r, _, errs := runImportTest(t, "--target", target, url)
	wantImported(t, code, r, errs, filepath.Join(target, "disk.img"), want)
	if r.Spooled {
		t.Fatal("spooled: a server that reads ranges is read in place")
	}
	if code, _, errs := imager("info", url); code != 0 {
		t.Fatalf("info: exit %d: %s", code, errs)
	}
	out := filepath.Join(t.TempDir(), "out.raw")
	if code, _, errs := imager("convert", "-O", "raw", url, out); code != 0 {
		t.Fatalf("convert: exit %d: %s", code, errs)
	} else if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
		t.Fatal("convert over a redirect differs from qemu-img's reading")
	}

	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("s3cr3t\n"), 0o600)
	hosts.Requests.Store(0)
	target = t.TempDir()
	code, r, _, _ = runImportTest(t, "--target", target, "--bearer-token-file", tok, "--insecure-allow-credentials-over-http", "--retries", "0", url)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonSourceError)
	if !strings.Contains(r.Message, "another host") {
		t.Fatalf("message %q", r.Message)
	}
	if hosts.Requests.Load() != 0 || hosts.Authorized.Load() != 0 {
		t.Fatalf("with credentials, %d requests reached the other host (%d with them)", hosts.Requests.Load(), hosts.Authorized.Load())
	}
}

// Credentials in the URL are refused before any request, pointing at the
// credential files, and never echoed.
func TestImportHTTPCredentialsInURL(t *testing.T) {
	c := getHTTPChain(t)
	ds, url, _ := serveChain(t, c, "vm-000002.vmdk", nil)
	url = strings.Replace(url, "http://", "http://alice:hunter2@", 1)
	target := t.TempDir()
	code, r, _, errs := runImportTest(t, "--target", target, "--insecure-allow-credentials-over-http", url)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	if !strings.Contains(r.Message, "--username-file") {
		t.Fatalf("message %q, want --username-file in it", r.Message)
	}
	for _, secret := range []string{"alice", "hunter2"} {
		if strings.Contains(r.Message, secret) || strings.Contains(errs, secret) {
			t.Fatalf("%q in the message %q or the log %q", secret, r.Message, errs)
		}
	}
	if n := ds.Requests() + ds.Logins(); n != 0 {
		t.Fatalf("%d requests or logins: the URL with credentials was requested", n)
	}
	for _, cmd := range [][]string{{"info", url}, {"convert", "-O", "raw", url, filepath.Join(t.TempDir(), "out")}} {
		if code, _, errs := imager(cmd...); code == 0 || !strings.Contains(errs, "--username-file") || strings.Contains(errs, "hunter2") {
			t.Fatalf("%s: exit %d: %s", cmd[0], code, errs)
		}
	}
}

// Writing into a seSparse extent (imager write, or imager commit into a
// seSparse parent) is refused saying why and what to do, not only that
// the extent is SESPARSE; nothing is written.
func TestWriteSESparseRefused(t *testing.T) {
	dir := t.TempDir()
	c, err := vmdktest.WriteESXiChain(dir, "vm", 4<<20, vmdktest.ChainOptions{Deltas: 2, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	before := rawOf(t, dir, filepath.Base(c.Top))
	for _, args := range [][]string{{"write", "0", "4k", c.Top}, {"commit", c.Top}} {
		code, _, errs := imager(args...)
		if code == 0 || !strings.Contains(errs, "seSparse extents are read-only") || !strings.Contains(errs, "flatten") {
			t.Fatalf("%s: exit %d: %s", args[0], code, errs)
		}
	}
	if !bytes.Equal(rawOf(t, dir, filepath.Base(c.Top)), before) {
		t.Fatal("the refused writes changed the chain")
	}
}

// A sparse VMDK at a URL that names no file (a download endpoint ending
// in "/") has no siblings to read: with --checksum it is spooled and
// imported alone, as before HTTPFS.
func TestImportHTTPChecksumNoFileName(t *testing.T) {
	dir := t.TempDir()
	qemu(t, dir, "qemu-img", "create", "-f", "vmdk", "disk.vmdk", "4M")
	qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 0x11 64k 128k", "disk.vmdk")
	want := rawOf(t, dir, "disk.vmdk")
	b, _ := os.ReadFile(filepath.Join(dir, "disk.vmdk"))
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "disk.vmdk", time.Time{}, bytes.NewReader(b))
	}))
	defer ts.Close()
	sum := sha256.Sum256(b)
	target := t.TempDir()
	code, r, _, errs := runImportTest(t, "--target", target, "--scratch-dir", t.TempDir(), "--checksum", "sha256:"+hex.EncodeToString(sum[:]), ts.URL+"/download/?id=7")
	wantImported(t, code, r, errs, filepath.Join(target, "disk.img"), want)
}
