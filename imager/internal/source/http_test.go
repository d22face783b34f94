package source

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// No user name, password or query token of a URL reaches an error's text;
// a URL with credentials in it is refused before any request, pointing at
// the credential files.
func TestHTTPErrorsRedacted(t *testing.T) {
	var requests atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.NotFound(w, r)
	}))
	defer ts.Close()
	dead := httptest.NewServer(nil)
	dead.Close()
	redacted := func(err error) {
		t.Helper()
		for _, s := range []string{"alice", "hunter2", "s3cr3t"} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%q in %q", s, err.Error())
			}
		}
	}
	for _, base := range []string{ts.URL, dead.URL} {
		withUser := strings.Replace(base, "://", "://alice:hunter2@", 1) + "/missing.vmdk?token=s3cr3t"
		_, err := newHTTPClient(withUser, HTTPOptions{}, io.Discard)
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), "--username-file") {
			t.Fatalf("credentials in the URL: %v, want ErrInvalidOptions pointing at --username-file", err)
		}
		redacted(err)
		h, err := newHTTPClient(base+"/missing.vmdk?token=s3cr3t", HTTPOptions{}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.getOnce(context.Background(), 0, -1, "")
		if err == nil {
			t.Fatal("no error")
		}
		redacted(err)
	}
	if n := requests.Load(); n != 1 {
		t.Fatalf("%d requests, want 1: the URL with credentials must not be requested", n)
	}
}

func TestHTTPStatusMeaning(t *testing.T) {
	for code, want := range map[int]error{404: ErrNotFound, 410: ErrNotFound, 401: ErrUnauthorized, 403: ErrUnauthorized, 503: ErrTransient, 429: ErrTransient} {
		if err := error(&HTTPStatusError{Code: code}); !errors.Is(err, want) {
			t.Errorf("%d: not %v", code, want)
		}
	}
	if errors.Unwrap(&HTTPStatusError{Code: 400}) != nil {
		t.Error("400 means more than a status")
	}
}

// Content-Range is read strictly: anything but bytes FIRST-LAST/TOTAL (or
// /*) with FIRST <= LAST < TOTAL is refused, not guessed at.
func TestParseContentRange(t *testing.T) {
	for h, want := range map[string]*contentRange{
		"bytes 0-499/1234":               {0, 499, 1234},
		"bytes 500-999/*":                {500, 999, -1},
		"bytes 0-0/1":                    {0, 0, 1},
		"bytes 0-499":                    nil,
		"bytes 500-499/1234":             nil,
		"bytes 0-1234/1234":              nil,
		"bytes -1-499/1234":              nil,
		"bytes +0-499/1234":              nil,
		"bytes 0--499/1234":              nil,
		"bytes 0-499/-1":                 nil,
		"bytes 0-99999999999999999999/1": nil,
		"items 0-499/1234":               nil,
		"bytes  0-499/1234":              nil,
		"bytes */1234":                   nil,
		"":                               nil,
	} {
		got, err := parseContentRange(h)
		if want == nil {
			if err == nil {
				t.Errorf("%q: accepted as %+v", h, got)
			}
			continue
		}
		if err != nil || got != *want {
			t.Errorf("%q: %+v %v, want %+v", h, got, err, *want)
		}
	}
}
