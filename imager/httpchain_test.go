package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/test/datastore"
	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// A datastore's chain, as ESXi leaves it after two snapshots: a thin vmfs
// base (vm.vmdk + vm-flat.vmdk), a vmfsSparse delta (vm-000001.vmdk +
// vm-000001-delta.vmdk) and, over it, a monolithicSparse child written by
// imager create and qemu-io (vm-000002.vmdk). Served from the datastore
// "ds1" of the datacenter "dc 1" to user alice.
type httpChain struct {
	dir   string
	delta []byte // the raw content of vm-000001.vmdk, from the model
	top   []byte // the raw content of vm-000002.vmdk, from qemu-img
}

var (
	httpChainOnce sync.Once
	httpChainFix  httpChain
	httpChainErr  error
)

const httpChainSize = 20 << 20

func getHTTPChain(t *testing.T) *httpChain {
	t.Helper()
	httpChainOnce.Do(func() {
		dir, err := os.MkdirTemp("", "httpchain")
		if err != nil {
			httpChainErr = err
			return
		}
		c, err := vmdktest.WriteESXiChain(dir, "vm", httpChainSize, vmdktest.ChainOptions{Deltas: 1, Seed: 11, VMFSSparse: true})
		if err != nil {
			httpChainErr = err
			return
		}
		var model bytes.Buffer
		if _, err := c.Model.WriteTo(&model); err != nil {
			httpChainErr = err
			return
		}
		if code, _, errs := imager("create", "-b", filepath.Join(dir, "vm-000001.vmdk"), filepath.Join(dir, "vm-000002.vmdk")); code != 0 {
			httpChainErr = fmt.Errorf("imager create: %s", errs)
			return
		}
		httpChainFix = httpChain{dir: dir, delta: model.Bytes()}
	})
	if httpChainErr != nil {
		t.Fatal(httpChainErr)
	}
	c := &httpChainFix
	if c.top == nil {
		qemu(t, c.dir, "qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 1M 192k", "-c", "write -P 0 12M 64k", "vm-000002.vmdk")
		c.top = rawOf(t, c.dir, "vm-000002.vmdk")
		if !bytes.Equal(rawOf(t, c.dir, "vm-000001.vmdk"), c.delta) {
			t.Fatal("qemu-img and the model differ on vm-000001.vmdk")
		}
	}
	return c
}

// serveChain serves the chain (changed by setup) and returns the server,
// the URL of name and the credential flags.
func serveChain(t *testing.T, c *httpChain, name string, setup func(*datastore.Server)) (*datastore.Server, string, []string) {
	t.Helper()
	ds := &datastore.Server{Dir: c.dir, DCPath: "dc 1", DSName: "ds1", User: "alice", Password: "hunter2"}
	if setup != nil {
		setup(ds)
	}
	ts := httptest.NewServer(ds)
	t.Cleanup(ts.Close)
	tmp := t.TempDir()
	user, pass := filepath.Join(tmp, "user"), filepath.Join(tmp, "pass")
	os.WriteFile(user, []byte("alice\n"), 0o600)
	os.WriteFile(pass, []byte("hunter2\n"), 0o600)
	return ds, ds.URL(ts.URL, name), []string{"--username-file", user, "--password-file", pass, "--insecure-allow-credentials-over-http"}
}

// A chain is imported over HTTP in place, byte for byte as qemu-img reads
// the local files, in one session, with the top descriptor's identity.
func TestImportHTTPChain(t *testing.T) {
	c := getHTTPChain(t)
	for _, tc := range []struct {
		name, createType string
		want             []byte
		conns            string
	}{
		{"vm-000002.vmdk", "monolithicSparse", c.top, "4"},
		{"vm-000002.vmdk", "monolithicSparse", c.top, "1"},
		{"vm-000001.vmdk", "vmfsSparse", c.delta, "4"},
	} {
		t.Run(tc.name+"-"+tc.conns, func(t *testing.T) {
			ds, url, creds := serveChain(t, c, tc.name, nil)
			dir := t.TempDir()
			args := append([]string{"--target", dir, "--http-connections", tc.conns}, creds...)
			code, r, _, errs := runImportTest(t, append(args, url)...)
			wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), tc.want)
			cid, parent := cidsOf(t, c.dir, tc.name)
			if r.Spooled || r.SourceFormat != "vmdk" || r.CreateType != tc.createType || r.CID != cid || r.ParentCID != parent {
				t.Fatalf("result %+v, want %s CID %s parent %s, not spooled", r, tc.createType, cid, parent)
			}
			if n := ds.Sessions(); n != 1 {
				t.Fatalf("%d sessions for one import, want 1", n)
			}
			if n := ds.Logins(); n != 1 { // the stream's first request; every other carries the session cookie
				t.Fatalf("the password went out %d times, want 1", n)
			}
		})
	}
}

// --checksum is of the descriptor, the URL given, and is verified before
// anything is written.
func TestImportHTTPChainChecksum(t *testing.T) {
	c := getHTTPChain(t)
	desc, err := os.ReadFile(filepath.Join(c.dir, "vm-000001.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(desc)
	_, url, creds := serveChain(t, c, "vm-000001.vmdk", nil)
	dir := t.TempDir()
	code, r, _, errs := runImportTest(t, append(append([]string{"--target", dir, "--checksum", "sha256:" + hex.EncodeToString(sum[:])}, creds...), url)...)
	wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), c.delta)
	if r.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("sha256 %q", r.SHA256)
	}
	ds, url, creds := serveChain(t, c, "vm-000001.vmdk", nil)
	dir = t.TempDir()
	code, r, _, _ = runImportTest(t, append(append([]string{"--target", dir, "--checksum", "sha256:" + strings.Repeat("0", 64)}, creds...), url)...)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonChecksumMismatch)
	emptyDir(t, dir)
	if n := ds.Requests(); n != 1 {
		t.Fatalf("%d requests before the checksum failed: only the descriptor's should be made", n)
	}
}

// A sparse delta naming a parent, with --checksum, is spooled while it is
// hashed and imported from the spooled copy, with its parent read over
// HTTP beside the URL: the bytes imported are the bytes verified.
func TestImportHTTPSparseDeltaChecksum(t *testing.T) {
	c := getHTTPChain(t)
	top, err := os.ReadFile(filepath.Join(c.dir, "vm-000002.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(top)
	for _, tc := range []struct {
		sum  string
		code int
	}{{hex.EncodeToString(sum[:]), 0}, {strings.Repeat("ab", 32), jobapi.ExitPermanent}} {
		_, url, creds := serveChain(t, c, "vm-000002.vmdk", nil)
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, append(append([]string{"--target", dir, "--scratch-dir", t.TempDir(), "--checksum", "sha256:" + tc.sum}, creds...), url)...)
		if tc.code != 0 {
			wantFailed(t, code, r, tc.code, jobapi.ReasonChecksumMismatch)
			emptyDir(t, dir)
			continue
		}
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), c.top)
		if !r.Spooled || r.SHA256 != tc.sum { // spooled while hashed: the bytes imported are the bytes verified
			t.Fatalf("result %+v", r)
		}
	}
}

func TestImportHTTPChainRefusals(t *testing.T) {
	c := getHTTPChain(t)
	for _, tc := range []struct {
		name   string
		top    string // default vm-000002.vmdk
		setup  func(*datastore.Server)
		url    func(string) string
		args   []string
		code   int
		reason string
		msg    string
	}{
		{name: "locked delta", setup: func(ds *datastore.Server) { ds.Lock("vm-000001-delta.vmdk") },
			code: jobapi.ExitTransient, reason: jobapi.ReasonSourceInUse, msg: "vm-000001-delta.vmdk is in use: the VM is running (ESXi locks its disks); power it off"},
		{name: "bad password", setup: func(ds *datastore.Server) { ds.Password = "other" },
			code: jobapi.ExitPermanent, reason: jobapi.ReasonUnauthorized, msg: "401"},
		{name: "no ranges", top: "vm-000001.vmdk", setup: func(ds *datastore.Server) { ds.IgnoreRange = true },
			code: jobapi.ExitPermanent, reason: jobapi.ReasonSourceError, msg: "never downloaded whole"},
		{name: "no query", url: func(u string) string { return u[:strings.IndexByte(u, '?')] },
			code: jobapi.ExitPermanent, reason: jobapi.ReasonSourceNotFound, msg: "404"},
		{name: "lying sibling", setup: func(ds *datastore.Server) {
			ds.Rewrite = func(name string, h http.Header) {
				if name == "vm-flat.vmdk" && h.Get("Content-Range") != "" && !strings.HasPrefix(h.Get("Content-Range"), "bytes 0-0/") {
					h.Set("Content-Range", "bytes 0-1048575/"+fmt.Sprint(httpChainSize))
				}
			}
		}, code: jobapi.ExitPermanent, reason: jobapi.ReasonSourceError, msg: "Content-Range"},
		{name: "root", args: []string{"--root", "/images"}, code: jobapi.ExitPermanent, reason: jobapi.ReasonInvalidArguments, msg: "--root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.top == "" {
				tc.top = "vm-000002.vmdk"
			}
			_, url, creds := serveChain(t, c, tc.top, tc.setup)
			if tc.url != nil {
				url = tc.url(url)
			}
			dir := t.TempDir()
			args := append(append(append([]string{"--target", dir, "--retries", "0"}, tc.args...), creds...), url)
			code, r, _, _ := runImportTest(t, args...)
			wantFailed(t, code, r, tc.code, tc.reason)
			if !strings.Contains(r.Message, tc.msg) {
				t.Fatalf("message %q, want %q in it", r.Message, tc.msg)
			}
			for _, secret := range []string{"hunter2", "dc 1", "dc%201", "ds1"} {
				if strings.Contains(r.Message, secret) {
					t.Fatalf("%q in the message %q", secret, r.Message)
				}
			}
			emptyDir(t, dir)
		})
	}
}

// A descriptor naming a parent outside its directory is refused, and no
// request leaves that directory.
func TestImportHTTPChainEscape(t *testing.T) {
	c := getHTTPChain(t)
	dir := t.TempDir()
	sub := filepath.Join(dir, "vm")
	os.MkdirAll(sub, 0o755)
	for _, f := range []string{"vm.vmdk", "vm-flat.vmdk", "vm-000001.vmdk", "vm-000001-delta.vmdk"} {
		b, err := os.ReadFile(filepath.Join(c.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, f) // the parent, above the delta's directory
		if strings.HasPrefix(f, "vm-000001") {
			dst = filepath.Join(sub, f)
			b = bytes.Replace(b, []byte(`parentFileNameHint="vm.vmdk"`), []byte(`parentFileNameHint="../vm.vmdk"`), 1)
		}
		os.WriteFile(dst, b, 0o644)
	}
	if b, _ := os.ReadFile(filepath.Join(sub, "vm-000001.vmdk")); !bytes.Contains(b, []byte(`"../vm.vmdk"`)) {
		t.Fatalf("the fixture's parent hint is not what the test rewrites:\n%s", b)
	}
	ds, url, creds := serveChain(t, &httpChain{dir: dir}, "vm/vm-000001.vmdk", nil)
	target := t.TempDir()
	code, r, _, _ := runImportTest(t, append(append([]string{"--target", target}, creds...), url)...)
	if code == 0 || r.Phase != jobapi.Failed || !r.Permanent {
		t.Fatalf("exit %d, result %+v", code, r)
	}
	if slices.Contains(ds.Names(), "vm.vmdk") || !slices.Contains(ds.Names(), "vm/vm-000001-delta.vmdk") {
		t.Fatalf("requested %q: the parent above the delta's directory was asked for, or the delta was not", ds.Names())
	}
}

// info and convert read a chain at a URL as they read a local one.
func TestInfoAndConvertHTTP(t *testing.T) {
	c := getHTTPChain(t)
	ds, url, creds := serveChain(t, c, "vm-000002.vmdk", nil)
	code, out, errs := imager(append(append([]string{"info", "--output=json", "--backing-chain"}, creds...), url)...)
	if code != 0 {
		t.Fatalf("info: exit %d: %s", code, errs)
	}
	var info infoJSON
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.VirtualSize != httpChainSize || info.CreateType != "monolithicSparse" || len(info.BackingChain) != 2 ||
		info.BackingChain[0].CreateType != "vmfsSparse" || info.BackingChain[1].CreateType != "vmfs" {
		t.Fatalf("info %+v", info)
	}
	res := filepath.Join(t.TempDir(), "result.json")
	if code, _, errs := imager(append(append([]string{"info", "--result-file", res}, creds...), url)...); code != 0 {
		t.Fatalf("info --result-file: exit %d: %s", code, errs)
	}
	b, _ := os.ReadFile(res)
	r, err := jobapi.Parse(string(b))
	cid, parent := cidsOf(t, c.dir, "vm-000002.vmdk")
	if err != nil || r.VirtualSize != httpChainSize || r.CID != cid || r.ParentCID != parent {
		t.Fatalf("info result %+v (%v)", r, err)
	}
	dst := filepath.Join(t.TempDir(), "out.raw")
	if code, _, errs := imager(append(append([]string{"convert", "-O", "raw"}, creds...), url, dst)...); code != 0 {
		t.Fatalf("convert: exit %d: %s", code, errs)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, c.top) {
		t.Fatal("convert over HTTP differs from qemu-img's reading of the local chain")
	}
	if n := ds.Sessions(); n != 3 {
		t.Fatalf("%d sessions for three commands, want 3", n)
	}
	// Commands that read local files only say so.
	if code, _, errs := imager("compare", url, url); code == 0 || !strings.Contains(errs, "reads local files") || strings.Contains(errs, "ds1") {
		t.Fatalf("map of a URL: exit %d: %s", code, errs)
	}
}

// --http-connections is checked before any work.
func TestHTTPConnectionsFlag(t *testing.T) {
	for _, n := range []string{"0", "-1", "17"} {
		if code, _, errs := imager("import", "--target", t.TempDir(), "--http-connections", n, "http://127.0.0.1:1/x.vmdk"); code != jobapi.ExitUsage || !strings.Contains(errs, "--http-connections") {
			t.Errorf("--http-connections %s: exit %d: %s", n, code, errs)
		}
	}
}

// ESXi's chains as VMFS6 leaves them (a thin vmfs base under two seSparse
// deltas) and as a datastore moved from VMFS5 does (a vmfsSparse delta
// under seSparse ones), imported over HTTP from their top descriptor in
// place: byte for byte the model's content and qemu-img's reading of the
// local files, in one session.
func TestImportHTTPESXiChains(t *testing.T) {
	for _, o := range []vmdktest.ChainOptions{{Deltas: 2, Seed: 21}, {Deltas: 3, Seed: 22, VMFSSparse: true}} {
		t.Run(fmt.Sprintf("deltas%d-vmfssparse%v", o.Deltas, o.VMFSSparse), func(t *testing.T) {
			dir := t.TempDir()
			const size = 36<<20 + 512 // three 16 MiB grain tables, the last partial, and a partial grain
			c, model := esxiChain(t, dir, size, o)
			top := filepath.Base(c.Top)
			ds, url, creds := serveChain(t, &httpChain{dir: dir}, top, nil)
			target := t.TempDir()
			code, r, _, errs := runImportTest(t, append(append([]string{"--target", target}, creds...), url)...)
			wantImported(t, code, r, errs, filepath.Join(target, "disk.img"), model)
			cid, parent := cidsOf(t, dir, top)
			if r.Spooled || r.CreateType != "seSparse" || r.CID != cid || r.ParentCID != parent {
				t.Fatalf("result %+v, want seSparse CID %s parent %s", r, cid, parent)
			}
			if ds.Sessions() != 1 || ds.Logins() != 1 {
				t.Fatalf("%d sessions, %d logins for one import, want 1 and 1", ds.Sessions(), ds.Logins())
			}
			for _, f := range c.Files {
				if !slices.Contains(ds.Names(), filepath.Base(f)) {
					t.Fatalf("%s was never read: %q", filepath.Base(f), ds.Names())
				}
			}
		})
	}
}

// Against a host that throttles each connection, as ESXi does, an import
// with four connections is much faster than with one, and never has more
// than its connections' requests in flight.
func TestTimedImportHTTPConnections(t *testing.T) {
	dir := t.TempDir()
	const size = 16 << 20
	content := vmdktest.MixedContent(31, size)
	if _, err := vmdktest.WriteVMFSBase(dir, "vm", content, size, vmdktest.VMFSOptions{}); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	content.ReadAt(want, 0)
	took := map[string]time.Duration{}
	for _, conns := range []string{"1", "4"} {
		ds, url, creds := serveChain(t, &httpChain{dir: dir}, "vm.vmdk", func(ds *datastore.Server) { ds.Throttle = 16 << 20 })
		target := t.TempDir()
		start := time.Now()
		code, r, _, errs := runImportTest(t, append(append([]string{"--target", target, "--http-connections", conns}, creds...), url)...)
		took[conns] = time.Since(start)
		wantImported(t, code, r, errs, filepath.Join(target, "disk.img"), want)
		if n, _ := strconv.ParseInt(conns, 10, 64); ds.MaxInFlight() > n {
			t.Fatalf("%d requests in flight with --http-connections %s", ds.MaxInFlight(), conns)
		}
	}
	t.Logf("1 connection %v, 4 connections %v", took["1"], took["4"])
	if took["1"] < 2*took["4"] {
		t.Fatalf("4 connections took %v, not twice as fast as 1 (%v)", took["4"], took["1"])
	}
}

// A chain much larger than the cache is imported with memory bounded by
// the pool (connections and blocks shared by its files), not by its size:
// a base full of data under a delta, as the bench's chain, read in place
// over the datastore API with one connection and with four. Issue 16
// bounds any path at 64 MiB of RSS: the imager binary idles at about 15
// MiB, so its input may cost 48 MiB above the idle process. The pool was
// 44 MiB of blocks, never reused, and the heap grew to twice what was
// live: this chain peaked at 90-115 MiB above the idle process.
func TestHostileHTTPChainMemory(t *testing.T) {
	dir := t.TempDir()
	const size = 256 << 20
	content := vmdktest.MixedContent(41, size)
	cid, err := vmdktest.WriteVMFSBase(dir, "vm", content, size, vmdktest.VMFSOptions{Thin: true})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	content.ReadAt(want, 0)
	data := bytes.Repeat([]byte("delta grain\n"), vmdktest.GrainSize/12)
	var grains []vmdktest.Grain
	for g := int64(0); g < size/vmdktest.GrainSize; g += 997 {
		grains = append(grains, vmdktest.Grain{Index: g, Kind: vmdktest.Allocated, Data: data})
		copy(want[g*vmdktest.GrainSize:][:vmdktest.GrainSize], append(data, make([]byte, vmdktest.GrainSize-len(data))...))
	}
	if _, err := vmdktest.WriteSESparseDelta(dir, "vm-000001", "vm.vmdk", cid, size, grains, vmdktest.SESparseOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, conns := range []string{"1", "4"} {
		t.Run("connections"+conns, func(t *testing.T) {
			_, url, creds := serveChain(t, &httpChain{dir: dir}, "vm-000001.vmdk", nil)
			b := bound{Time: 60 * time.Second, Mem: 48 << 20}
			run, r, target := importResult(t, b, nil, append(append(creds, "--http-connections", conns), url)...)
			if run.Code != 0 {
				t.Fatalf("exit %d: %s", run.Code, run.Stderr)
			}
			t.Logf("%d MiB chain in %v, peak RSS %d MiB", size>>20, run.Elapsed.Round(time.Millisecond), run.MaxRSS>>20)
			got, err := os.ReadFile(filepath.Join(target, "disk.img"))
			if err != nil || r.VirtualSize != size || !bytes.Equal(got, want) {
				t.Fatalf("disk.img: %d bytes (%v), result %+v: not the chain's content", len(got), err, r)
			}
		})
	}
}
