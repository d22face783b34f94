package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// A VMDK on a datastore is several files: a text descriptor naming its
// extents (vm-flat.vmdk) and, for a snapshot, its parent
// (parentFileNameHint), each a sibling of the descriptor. HTTPFS serves
// the descriptor URL's directory as an fs.FS so vmdk.OpenFS reads the
// whole chain in place with Range requests:
//   - a sibling's URL is the descriptor's with the last path element
//     replaced (same scheme, host and port), its query kept: ESXi's
//     dcPath and dsName, or a signed URL's token, apply to every file;
//   - one client, one cookie jar, one login for all the files;
//   - with credentials or a session cookie, the files come from that one
//     host: a redirect elsewhere is refused, so they stay there (without,
//     a redirect is followed: httpClient.checkRedirect);
//   - a server that ignores Range is refused, not worked around: the
//     chain would have to be downloaded whole, file by file.

// HTTPFS is the directory of an http(s) URL, read-only.
type HTTPFS struct {
	ctx  context.Context
	h    *httpClient // the descriptor's: its client, credentials and session are shared
	pool *blockPool  // the connections and cache all its files share
	base *url.URL    // the descriptor's URL
	dir  string      // base's escaped path up to and including its last "/"
	// opened: a file was opened, so the credentials are good and a later
	// 403 is the host refusing that one file.
	opened atomic.Bool
	// known is the descriptor's file as the stream that found it saw it
	// (size, validator), so it is not probed again and every Range reply
	// is checked against what the first reply said ("": not known).
	known     string
	knownSize int64
	knownVal  string
}

// OpenHTTPFS is the directory of rawURL, and the name of rawURL's file in
// it. Nothing is requested yet.
func OpenHTTPFS(ctx context.Context, rawURL string, o HTTPOptions, log io.Writer) (*HTTPFS, string, error) {
	h, err := newHTTPClient(rawURL, o, log)
	if err != nil {
		return nil, "", err
	}
	return newHTTPFS(ctx, h)
}

// FS is the directory of the URL s reads, sharing its client and session.
func (s *HTTPStream) FS(ctx context.Context) (*HTTPFS, string, error) {
	f, name, err := newHTTPFS(ctx, s.h)
	if err == nil && s.size >= 0 && s.rangeOK {
		f.known, f.knownSize, f.knownVal = name, s.size, s.validator
	}
	return f, name, err
}

func newHTTPFS(ctx context.Context, h *httpClient) (*HTTPFS, string, error) {
	u, err := url.Parse(h.url)
	if err != nil {
		return nil, "", invalid(redactURLError(err))
	}
	esc := u.EscapedPath()
	i := strings.LastIndexByte(esc, '/')
	if i < 0 || i == len(esc)-1 {
		return nil, "", invalid(fmt.Errorf("%s names a directory, not a file", h.shown))
	}
	name, err := url.PathUnescape(esc[i+1:])
	if err != nil || !fs.ValidPath(name) || strings.Contains(name, "/") {
		return nil, "", invalid(fmt.Errorf("%s: %q is not a file name", h.shown, esc[i+1:]))
	}
	return &HTTPFS{ctx: ctx, h: h, pool: newBlockPool(h.opts.Connections), base: u, dir: esc[:i+1]}, name, nil
}

// sibling is the client of the file name in the directory.
func (f *HTTPFS) sibling(name string) (*httpClient, error) {
	if !fs.ValidPath(name) || name == "." {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	u := *f.base
	u.RawPath = f.dir + strings.Join(segs, "/")
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	u.Path, u.Fragment, u.RawFragment = p, "", ""
	c := *f.h
	c.url = u.String()
	c.shown = jobapi.RedactURL(c.url)
	return &c, nil
}

// Open implements fs.FS: it finds the file's size with a one-byte Range
// request, which also proves the server reads ranges.
func (f *HTTPFS) Open(name string) (fs.File, error) {
	h, err := f.sibling(name)
	if err != nil {
		return nil, err
	}
	if name == f.known {
		f.opened.Store(true)
		return &httpFile{name: name, r: newHTTPReaderAt(f.ctx, h, f.knownSize, f.knownVal, f.pool)}, nil
	}
	resp, err := h.get(f.ctx, 0, 0, "")
	if err != nil {
		if empty(err) {
			return &httpFile{name: name, r: newHTTPReaderAt(f.ctx, h, 0, "", f.pool)}, nil
		}
		return nil, f.openError(name, h, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return nil, protocolErr(fmt.Errorf("%s: the server answers Range requests with the whole file: a VMDK is read in place with Range requests (its descriptor, extents and parents are files of their own), never downloaded whole; serve it from a server that reads ranges (ESXi's and vCenter's /folder do)", h.shown))
	}
	body, size, err := checkPartial(resp, h.shown, 0, 0, -1)
	if err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, protocolErr(fmt.Errorf("%s: Content-Range %q does not give the file's size", h.shown, resp.Header.Get("Content-Range")))
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		if errors.Is(err, ErrProtocol) {
			return nil, err
		}
		return nil, transient(fmt.Errorf("%s: %w", h.shown, err))
	}
	f.opened.Store(true)
	return &httpFile{name: name, r: newHTTPReaderAt(f.ctx, h, size, validator(resp), f.pool)}, nil
}

// empty: err is a 416 to the first byte, which an empty file gets.
func empty(err error) bool {
	var st *HTTPStatusError
	return errors.As(err, &st) && st.Code == http.StatusRequestedRangeNotSatisfiable
}

// openError says what a refusal to open a file means. A file a running VM
// holds is refused by ESXi (hostd cannot lock it): 403 once the session
// has read other files, or a status that says so (409, 423).
func (f *HTTPFS) openError(name string, h *httpClient, err error) error {
	var st *HTTPStatusError
	if !errors.As(err, &st) {
		return err
	}
	if errors.Is(err, ErrInUse) || st.Code == http.StatusForbidden && f.opened.Load() {
		return InUse(name, h.shown, st.Status)
	}
	if st.Code == http.StatusForbidden {
		return fmt.Errorf("%w (ESXi also answers 403 for a disk a running VM holds)", err)
	}
	return err
}

// InUse is the error of a file the host will not serve because it is
// held open: ESXi locks the files of a running VM's disks.
func InUse(name, shown, status string) error {
	return tag(ErrInUse, fmt.Errorf("%s is in use: the VM is running (ESXi locks its disks); power it off, or import a snapshot's frozen chain (%s answered %s)", name, shown, status))
}

// httpFile is an open file of an HTTPFS: io.ReaderAt through Range
// requests, and a Read that reads on from where the last one stopped.
type httpFile struct {
	name string
	r    *httpReaderAt
	pos  int64
}

func (f *httpFile) ReadAt(p []byte, off int64) (int, error) { return f.r.ReadAt(p, off) }

func (f *httpFile) Read(p []byte) (int, error) {
	n, err := f.r.ReadAt(p, f.pos)
	f.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (f *httpFile) Stat() (fs.FileInfo, error) { return httpFileInfo{f}, nil }
func (f *httpFile) Close() error               { return nil }

type httpFileInfo struct{ f *httpFile }

func (i httpFileInfo) Name() string       { return path.Base(i.f.name) }
func (i httpFileInfo) Size() int64        { return i.f.r.size }
func (i httpFileInfo) Mode() fs.FileMode  { return 0o444 }
func (i httpFileInfo) ModTime() time.Time { return time.Time{} }
func (i httpFileInfo) IsDir() bool        { return false }
func (i httpFileInfo) Sys() any           { return nil }
