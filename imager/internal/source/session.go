package source

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// ESXi and vCenter answer basic auth by creating a session, returned as a
// cookie, and limit how many sessions a user may hold: a client that sent
// its password with every Range request would run out of them in minutes.
// So once the session cookie is held, requests carry it instead of the
// password; when it expires (401 to a request that carried it) the client
// logs in again, once. Parallel requests log in one at a time, so a
// whole chain is one session.

// sessionCookies are the cookies that stand for a login. Other cookies (a
// load balancer's) are kept and sent, but do not replace the password.
var sessionCookies = []string{"vmware_soap_session"}

// session is what the clients of one source share: the login, and the
// one host the files may come from while credentials are in play.
type session struct {
	login sync.Mutex // held by the request that logs in
	home  *url.URL   // the URL given: its host is the one credentials go to
}

// sameHost: a and b are one host to credentials: the same name (in any
// case) and port, a port left out being its scheme's default (to https,
// esxi and esxi:443 are one host; esxi:8443 is another). A site's two
// faces, http://esxi and https://esxi on their default ports, are one
// host too: whether credentials may go to http:// is decided apart
// (ErrCredentialsOverHTTP).
func sameHost(a, b *url.URL) bool {
	if !strings.EqualFold(a.Hostname(), b.Hostname()) {
		return false
	}
	pa, da := portOf(a)
	pb, db := portOf(b)
	return pa == pb || da && db
}

// portOf is u's port, and whether it is its scheme's default.
func portOf(u *url.URL) (string, bool) {
	def := map[string]string{"https": "443", "http": "80"}[strings.ToLower(u.Scheme)]
	p := u.Port()
	if p == "" {
		p = def
	}
	return p, p == def && def != ""
}

// sessionCookie is the session cookie the jar holds for u ("": none).
func (h *httpClient) sessionCookie(u *url.URL) string {
	if h.c.Jar == nil {
		return ""
	}
	for _, c := range h.c.Jar.Cookies(u) {
		if slices.Contains(sessionCookies, c.Name) {
			return c.Value
		}
	}
	return ""
}

// do sends req with the credentials it needs: a bearer token always,
// basic auth only while no session cookie is held. The request is cloned
// for each send (the client adds the jar's cookies to what it sends).
func (h *httpClient) do(req *http.Request) (*http.Response, error) {
	switch {
	case h.auth == nil:
		return h.c.Do(req)
	case !h.basic:
		r := req.Clone(req.Context())
		h.auth(r)
		return h.c.Do(r)
	}
	if held := h.sessionCookie(req.URL); held != "" {
		resp, err := h.c.Do(req.Clone(req.Context()))
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			return resp, err
		}
		resp.Body.Close()
		fmt.Fprintf(h.log, "imager: %s: the session expired; logging in again\n", h.shown)
		return h.login(req, held)
	}
	return h.login(req, "")
}

// login sends req with basic auth, one login at a time: a request that
// waited for another's login uses the session it made instead. refused
// is the session cookie the host no longer takes ("": none was held).
func (h *httpClient) login(req *http.Request, refused string) (*http.Response, error) {
	h.sess.login.Lock()
	defer h.sess.login.Unlock()
	r := req.Clone(req.Context())
	if held := h.sessionCookie(req.URL); held == "" || held == refused {
		h.auth(r)
	}
	return h.c.Do(r)
}
