package source

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/test/datastore"
)

// serveDatastore serves files (name: content) as datastore "ds1" of
// datacenter "dc 1", with user alice.
func serveDatastore(t *testing.T, files map[string][]byte) (*datastore.Server, *httptest.Server, HTTPOptions) {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ds := &datastore.Server{Dir: dir, DCPath: "dc 1", DSName: "ds1", User: "alice", Password: "hunter2"}
	ts := httptest.NewServer(ds)
	t.Cleanup(ts.Close)
	return ds, ts, HTTPOptions{UserFile: writeTemp(t, "alice\n"), PassFile: writeTemp(t, "hunter2\n"), InsecureCreds: true, Retries: 1, Backoff: time.Millisecond, Connections: 4}
}

func writeTemp(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func readAll(t *testing.T, fsys fs.FS, name string) []byte {
	t.Helper()
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, fi.Size())
	if _, err := f.(io.ReaderAt).ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}

// Siblings are the descriptor's URL with its last element replaced: the
// query (dcPath, dsName) goes with every file, names are escaped, and the
// whole directory is one login.
func TestHTTPFSSiblings(t *testing.T) {
	flat := randomBytes(3<<20+123, 1)
	ds, ts, o := serveDatastore(t, map[string][]byte{
		"my vm/vm.vmdk":             []byte("# Disk DescriptorFile\n"),
		"my vm/vm-flat.vmdk":        flat,
		"my vm/snap #1%/delta.vmdk": []byte("delta"),
	})
	fsys, name, err := OpenHTTPFS(context.Background(), ds.URL(ts.URL, "my%20vm/vm.vmdk"), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if name != "vm.vmdk" {
		t.Fatalf("name %q", name)
	}
	if got := readAll(t, fsys, "vm-flat.vmdk"); !bytes.Equal(got, flat) {
		t.Fatal("vm-flat.vmdk read differs")
	}
	if got := readAll(t, fsys, "snap #1%/delta.vmdk"); string(got) != "delta" {
		t.Fatalf("delta: %q", got)
	}
	if got := readAll(t, fsys, name); !strings.HasPrefix(string(got), "# Disk") {
		t.Fatalf("descriptor: %q", got)
	}
	if n := ds.Sessions(); n != 1 {
		t.Fatalf("%d sessions for one directory, want 1", n)
	}
	if n := ds.Logins(); n != 1 {
		t.Fatalf("%d requests carried the password, want 1", n)
	}
	for _, bad := range []string{"../vm.vmdk", "/etc/passwd", "a//b", "."} {
		if _, err := fsys.Open(bad); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("open %q: %v, want fs.ErrInvalid", bad, err)
		}
	}
	// The query is what finds the datastore: without it, nothing.
	bare, _, err := OpenHTTPFS(context.Background(), ts.URL+"/folder/my%20vm/vm.vmdk", o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bare.Open("vm-flat.vmdk"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("without dcPath and dsName: %v", err)
	}
}

// An expired session is logged in again, once; parallel requests log in
// one at a time (one session, not one each).
func TestHTTPFSSessionExpiry(t *testing.T) {
	ds, ts, o := serveDatastore(t, map[string][]byte{"a.vmdk": randomBytes(8<<20, 2), "b.vmdk": []byte("b")})
	fsys, _, err := OpenHTTPFS(context.Background(), ds.URL(ts.URL, "a.vmdk"), o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fsys.Open("a.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	ds.ExpireSessions()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			buf := make([]byte, 2<<20)
			if _, err := f.(io.ReaderAt).ReadAt(buf, int64(i)*2<<20); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := ds.Sessions(); n != 2 {
		t.Fatalf("%d sessions, want 2 (the first, and one after it expired)", n)
	}
	ds.Password = "changed"
	ds.ExpireSessions()
	if _, err := fsys.Open("b.vmdk"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("a refused login: %v", err)
	}
}

func TestHTTPFSRefusals(t *testing.T) {
	files := map[string][]byte{"vm.vmdk": []byte("descriptor"), "vm-flat.vmdk": randomBytes(1<<20, 3)}
	open := func(t *testing.T, ds *datastore.Server, base string, o HTTPOptions) (*HTTPFS, error) {
		fsys, _, err := OpenHTTPFS(context.Background(), ds.URL(base, "vm.vmdk"), o, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fsys.Open("vm.vmdk")
		return fsys, err
	}
	t.Run("bad password", func(t *testing.T) {
		ds, ts, o := serveDatastore(t, files)
		o.PassFile = writeTemp(t, "wrong")
		if _, err := open(t, ds, ts.URL, o); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("%v, want ErrUnauthorized", err)
		}
	})
	t.Run("locked", func(t *testing.T) {
		ds, ts, o := serveDatastore(t, files)
		ds.Lock("vm-flat.vmdk")
		fsys, err := open(t, ds, ts.URL, o)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fsys.Open("vm-flat.vmdk")
		if !errors.Is(err, ErrInUse) || errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "vm-flat.vmdk is in use: the VM is running") {
			t.Fatalf("%v, want ErrInUse alone", err)
		}
		ds.LockedStatus = http.StatusConflict
		if _, err := fsys.Open("vm-flat.vmdk"); !errors.Is(err, ErrInUse) {
			t.Fatalf("409: %v", err)
		}
	})
	t.Run("no ranges", func(t *testing.T) {
		ds, ts, o := serveDatastore(t, files)
		ds.IgnoreRange = true
		if _, err := open(t, ds, ts.URL, o); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "never downloaded whole") {
			t.Fatalf("%v, want a refusal", err)
		}
	})
	t.Run("lying size", func(t *testing.T) {
		for i, lie := range []func(h http.Header){
			func(h http.Header) { h.Set("Content-Range", "bytes 0-0/999999999") },
			func(h http.Header) { h.Set("Content-Range", "bytes 1-1/1048576") },
			func(h http.Header) { h.Set("Content-Length", "2") },
		} {
			ds, ts, o := serveDatastore(t, files)
			fsys, err := open(t, ds, ts.URL, o)
			if err != nil {
				t.Fatal(err)
			}
			f, err := fsys.Open("vm-flat.vmdk")
			if err != nil {
				t.Fatal(err)
			}
			ds.Rewrite = func(name string, h http.Header) {
				if name == "vm-flat.vmdk" {
					lie(h)
				}
			}
			_, err = f.(io.ReaderAt).ReadAt(make([]byte, 10), 0)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("a lying reply read: %v", err)
			}
			// A wrong total in the first reply is all the client knows of
			// the size; the replies after it must agree.
			if _, err := fsys.Open("vm-flat.vmdk"); i > 0 && !errors.Is(err, ErrProtocol) {
				t.Fatalf("a lying size opened: %v", err)
			}
		}
	})
	t.Run("other host", func(t *testing.T) {
		ds, ts, o := serveDatastore(t, files)
		other := httptest.NewServer(ds)
		defer other.Close()
		redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.RequestURI(), http.StatusFound)
		}))
		defer redirect.Close()
		_, err := open(t, ds, redirect.URL, o)
		if !errors.Is(err, ErrOtherHost) {
			t.Fatalf("%v, want ErrOtherHost", err)
		}
		if ds.Logins() != 0 {
			t.Fatalf("the password went to the other host")
		}
		_ = ts
	})
}
