package datastore

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
)

// OtherHost serves a handler on a second server and redirects every
// request of a first one there (302, the same path and query), as a CDN or
// an object store in front of a file does. Tests point a client at
// Redirect's URL and check, with Requests and Authorized, what followed
// the redirect to the other host.
type OtherHost struct {
	Redirect, Other *httptest.Server
	// Requests counts requests the other host got; Authorized, those of
	// them that carried an Authorization header.
	Requests, Authorized atomic.Int64
}

// NewOtherHost starts both servers; Close stops them.
func NewOtherHost(h http.Handler) *OtherHost {
	o := &OtherHost{}
	o.Other = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.Requests.Add(1)
		if r.Header.Get("Authorization") != "" {
			o.Authorized.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	o.Redirect = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, o.Other.URL+r.URL.RequestURI(), http.StatusFound)
	}))
	return o
}

// Close stops both servers.
func (o *OtherHost) Close() {
	o.Redirect.Close()
	o.Other.Close()
}
