package vcenter

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vmware/govmomi/simulator"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// nfcExports serves NFC lease device URLs as ESXi does: a GET of a disk's
// URL streams the disk, as of the snapshot exported, as a streamOptimized
// VMDK. vcsim's own handler sends the top link's file as it is (a
// descriptor a few hundred bytes long), which no client can use.
type nfcExports struct {
	mu     sync.Mutex
	disks  map[string]Disk   // by the top link's file name, which is the device URL's last element
	leases []string          // the leases streamed from, in order
	device map[string]string // a device name each lease streamed, by lease

	// failAfter, when > 0, cuts the next stream after that many bytes.
	failAfter atomic.Int64
}

func newNFCExports(svc *simulator.Service) *nfcExports {
	e := &nfcExports{disks: map[string]Disk{}, device: map[string]string{}}
	svc.Handle("GET /nfc/", e)
	return e
}

// add makes d the disk a device URL naming its top link streams.
func (e *nfcExports) add(d Disk) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.disks[path.Base(dsPathFile(d.Files[0]))] = d
}

func (e *nfcExports) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// vcsim knows the lease and its device URLs: ask it first. It answers
	// a GET of a live lease's device with the top link's descriptor,
	// small enough to discard; an unknown, completed or aborted lease
	// with 404.
	rec := httptest.NewRecorder()
	simulator.ServeNFC(rec, r)
	if rec.Code != http.StatusOK {
		http.Error(w, "no such NFC lease or device", rec.Code)
		return
	}
	lease, name := path.Base(path.Dir(r.URL.Path)), path.Base(r.URL.Path)
	e.mu.Lock()
	d, ok := e.disks[name]
	if _, seen := e.device[lease]; !seen {
		e.leases = append(e.leases, lease)
		e.device[lease] = name
	}
	e.mu.Unlock()
	if !ok {
		http.Error(w, "not a disk of the fixture", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-vnd.vmware-streamVmdk")
	var out io.Writer = w
	if n := e.failAfter.Swap(0); n > 0 {
		out = &cutWriter{w: w, left: n}
	}
	sw, err := vmdk.NewStreamWriter(out, vmdk.StreamOptions{
		ImageOptions: vmdk.ImageOptions{Size: d.Capacity}, ExtentFileName: name, Workers: 1,
	})
	if err == nil {
		_, err = io.Copy(sw, io.NewSectionReader(d.Content, 0, d.Capacity))
		if cerr := sw.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		// The client must see a broken transfer, not a short success:
		// ErrAbortHandler is net/http's way to cut the connection.
		panic(http.ErrAbortHandler)
	}
}

// cutWriter fails once left bytes have been written, as a host dropping
// an export half-way does.
type cutWriter struct {
	w    io.Writer
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		n, _ := c.w.Write(p[:c.left])
		c.left = 0
		if f, ok := c.w.(http.Flusher); ok {
			f.Flush()
		}
		return n, io.ErrClosedPipe
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// dsPathFile is the path part of "[ds] dir/file.vmdk".
func dsPathFile(dsPath string) string {
	for i := 0; i < len(dsPath); i++ {
		if dsPath[i] == ']' {
			return path.Clean(dsPath[min(len(dsPath), i+2):])
		}
	}
	return dsPath
}

// CutNFCExport makes the next NFC device URL GET stop after n bytes of
// the stream (the connection cut), as a host failing an export half-way.
func (f *Fixture) CutNFCExport(n int64) { f.nfc.failAfter.Store(n) }

// NFCLeases are the ids of the leases whose device URLs were read
// (HttpNfcLease moref values), in the order of their first read.
func (f *Fixture) NFCLeases() []string {
	f.nfc.mu.Lock()
	defer f.nfc.mu.Unlock()
	return slices.Clone(f.nfc.leases)
}

// LeaseOpen says whether vcsim still holds an NFC lease: neither
// completed nor aborted (HttpNfcLeaseComplete and HttpNfcLeaseAbort
// release it), for tests that a client closes its lease on every path.
func (f *Fixture) LeaseOpen(id string) bool {
	// A device URL of a released lease is 404; of a live one, 200 or,
	// for a device it does not have, 404 too: ask for a device the lease
	// streamed, or else for each disk the fixture has.
	f.nfc.mu.Lock()
	var names []string
	if name, ok := f.nfc.device[id]; ok {
		names = []string{name}
	} else {
		for name := range f.nfc.disks {
			names = append(names, name)
		}
	}
	f.nfc.mu.Unlock()
	for _, name := range names {
		rec := httptest.NewRecorder()
		simulator.ServeNFC(rec, httptest.NewRequest(http.MethodGet, "/nfc/"+id+"/"+name, nil))
		if rec.Code == http.StatusOK {
			return true
		}
	}
	return false
}
