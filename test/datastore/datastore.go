// Package datastore imitates the file API of an ESXi host or vCenter
// (GET https://host/folder/<path>?dcPath=<datacenter>&dsName=<datastore>)
// over a local directory, for imager's tests and the e2e file server.
//
// What it keeps of the real thing, because clients depend on it:
//   - both query parameters are required and must name the datastore
//     (anything else is 404, as ESXi answers an unknown datastore);
//   - basic auth creates a session, returned as the vmware_soap_session
//     cookie; a request with a valid cookie needs no credentials. ESXi
//     limits sessions per user, so a client must log in once and reuse the
//     cookie: Sessions and Logins let tests check it did;
//   - single Range requests (206 with Content-Range, 416 past the end);
//   - files a powered-on VM holds are refused. hostd cannot open a file
//     the VMX has locked ("Failed to lock the file"); over /folder that
//     surfaces as 403 Forbidden, or 500 on hosts that do not own the lock
//     (vmware/vic#6867). LockedStatus picks the status; the default is
//     403, the one a client cannot tell from bad credentials by the
//     status alone;
//   - a per-connection throttle, as ESXi's (clients open several).
package datastore

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CookieName is the session cookie ESXi and vCenter set.
const CookieName = "vmware_soap_session"

// Server serves Dir as the datastore DSName of datacenter DCPath.
type Server struct {
	Dir    string
	DCPath string
	DSName string
	// User and Password, when set, are required (basic auth, or a session
	// cookie a basic-auth request created).
	User, Password string
	// Throttle, when > 0, limits each reply to this many bytes per second.
	Throttle int64
	// LockedStatus is the status a locked file gets (0: 403).
	LockedStatus int
	// IgnoreRange answers every GET with the whole file (200), without
	// Accept-Ranges, as some servers and proxies do.
	IgnoreRange bool
	// Rewrite, when set, may change a reply's headers before it is sent
	// (a lying Content-Range or Content-Length): it gets the file's name
	// and the headers about to be sent.
	Rewrite func(name string, h http.Header)

	mu       sync.Mutex
	locked   map[string]bool
	sessions map[string]bool
	names    []string

	logins   atomic.Int64 // requests that carried basic auth
	created  atomic.Int64 // sessions created
	inFlight atomic.Int64
	maxIn    atomic.Int64
	requests atomic.Int64
}

// Lock marks name (slash-separated, relative to Dir) as held by a running
// VM; Unlock releases it.
func (s *Server) Lock(name string) { s.setLock(name, true) }

// Unlock releases a file Lock marked.
func (s *Server) Unlock(name string) { s.setLock(name, false) }

func (s *Server) setLock(name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked == nil {
		s.locked = map[string]bool{}
	}
	s.locked[path.Clean(name)] = on
}

// Sessions is how many sessions basic auth created.
func (s *Server) Sessions() int64 { return s.created.Load() }

// Logins is how many requests carried basic-auth credentials (a valid
// session cookie or not).
func (s *Server) Logins() int64 { return s.logins.Load() }

// MaxInFlight is the most GET replies that were being sent at once.
func (s *Server) MaxInFlight() int64 { return s.maxIn.Load() }

// Requests is how many requests reached a file (after auth).
func (s *Server) Requests() int64 { return s.requests.Load() }

// Names are the files requests asked for (after auth), in order.
func (s *Server) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.names)
}

// URL is the address of name on the server at base (http://host:port).
func (s *Server) URL(base, name string) string {
	return base + "/folder/" + name + "?dcPath=" + urlQuery(s.DCPath) + "&dsName=" + urlQuery(s.DSName)
}

func urlQuery(v string) string {
	r := strings.NewReplacer("%", "%25", "&", "%26", "+", "%2B", " ", "%20", "#", "%23", "=", "%3D")
	return r.Replace(v)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutPrefix(r.URL.Path, "/folder/")
	q := r.URL.Query()
	if !ok || r.Method != http.MethodGet && r.Method != http.MethodHead || q.Get("dcPath") != s.DCPath || q.Get("dsName") != s.DSName {
		http.NotFound(w, r)
		return
	}
	if !s.authorized(w, r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="VMware HTTP server"`)
		http.Error(w, "401 Unauthorized", http.StatusUnauthorized)
		return
	}
	s.requests.Add(1)
	name = path.Clean(name)
	s.mu.Lock()
	s.names = append(s.names, name)
	s.mu.Unlock()
	if name == "." || strings.HasPrefix(name, "../") || name == ".." {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	locked := s.locked[name]
	s.mu.Unlock()
	if locked {
		code := s.LockedStatus
		if code == 0 {
			code = http.StatusForbidden
		}
		http.Error(w, "Failed to lock the file", code)
		return
	}
	f, err := os.Open(filepath.Join(s.Dir, filepath.FromSlash(name)))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	s.serveFile(w, r, name, f, fi.Size(), fi.ModTime())
}

// authorized checks the session cookie, else basic auth, which creates a
// session.
func (s *Server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.User == "" && s.Password == "" {
		return true
	}
	user, pass, hasAuth := r.BasicAuth()
	if hasAuth {
		s.logins.Add(1)
	}
	if c, err := r.Cookie(CookieName); err == nil {
		s.mu.Lock()
		ok := s.sessions[c.Value]
		s.mu.Unlock()
		if ok {
			return true
		}
	}
	if !hasAuth {
		return false
	}
	if user != s.User || pass != s.Password {
		return false
	}
	id := fmt.Sprintf("session-%d-%d", time.Now().UnixNano(), s.created.Add(1))
	s.mu.Lock()
	if s.sessions == nil {
		s.sessions = map[string]bool{}
	}
	s.sessions[id] = true
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/", HttpOnly: true})
	return true
}

// ExpireSessions forgets every session, as a host does after its idle
// timeout: the next request with an old cookie gets 401.
func (s *Server) ExpireSessions() {
	s.mu.Lock()
	s.sessions = nil
	s.mu.Unlock()
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, name string, f *os.File, size int64, mod time.Time) {
	h := w.Header()
	if !s.IgnoreRange {
		h.Set("Accept-Ranges", "bytes")
	}
	h.Set("Last-Modified", mod.UTC().Format(http.TimeFormat))
	h.Set("Content-Type", "application/octet-stream")
	from, n, status := int64(0), size, http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !s.IgnoreRange {
		first, last, ok := parseRange(rg, size)
		if !ok {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			http.Error(w, "416 Requested Range Not Satisfiable", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		from, n, status = first, last-first+1, http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, size))
	}
	h.Set("Content-Length", fmt.Sprint(n))
	if s.Rewrite != nil {
		s.Rewrite(name, h)
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	cur := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		m := s.maxIn.Load()
		if cur <= m || s.maxIn.CompareAndSwap(m, cur) {
			break
		}
	}
	var out io.Writer = w
	if s.Throttle > 0 {
		out = &throttled{w: w, rate: s.Throttle, start: time.Now()}
	}
	io.Copy(out, io.NewSectionReader(f, from, n)) // a client gone mid-reply is its business
}

// parseRange reads one "bytes=FIRST-LAST", "bytes=FIRST-" or "bytes=-N"
// range of a file of size bytes, as the last byte it covers.
func parseRange(h string, size int64) (from, last int64, ok bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return 0, 0, false
	}
	if a == "" { // a suffix: the last b bytes
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 || size == 0 {
			return 0, 0, false
		}
		return max(0, size-n), size - 1, true
	}
	first, err := strconv.ParseUint(a, 10, 63)
	if err != nil || int64(first) >= size {
		return 0, 0, false
	}
	last = size - 1
	if b != "" {
		l, err := strconv.ParseUint(b, 10, 63)
		if err != nil || int64(l) < int64(first) {
			return 0, 0, false
		}
		last = int64(l)
		last = min(last, size-1)
	}
	return int64(first), last, true
}

// throttled writes at most rate bytes per second, in small pieces so a
// reader sees a steady trickle, as from a throttled host.
type throttled struct {
	w     io.Writer
	rate  int64
	start time.Time
	sent  int64
}

func (t *throttled) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		piece := min(len(p)-n, int(max(t.rate/50, 512)))
		due := t.start.Add(time.Duration(float64(t.sent+int64(piece)) / float64(t.rate) * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		k, err := t.w.Write(p[n : n+piece])
		n += k
		t.sent += int64(k)
		if err != nil {
			return n, err
		}
		if f, ok := t.w.(http.Flusher); ok {
			f.Flush()
		}
	}
	return n, nil
}
