package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// A session the caller logged in for (the vSphere SDK's) is sent as the
// vmware_soap_session cookie, instead of the password, to the URL's own
// host over https; the caller's TLS config is the trust; over http:// it
// is refused before anything is sent.
func TestHTTPPresetSessionCookie(t *testing.T) {
	var mu sync.Mutex
	var seen []string // per request: the cookie, and whether basic auth came
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Cookie(sessionCookies[0])
		_, _, basic := r.BasicAuth()
		mu.Lock()
		v := "none"
		if c != nil {
			v = c.Value
		}
		if basic {
			v += "+basic"
		}
		seen = append(seen, v)
		mu.Unlock()
		http.ServeContent(w, r, "vm.vmdk", time.Time{}, strings.NewReader("0123456789"))
	}))
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	user, pass := writeTemp(t, "alice"), writeTemp(t, "secret")
	o := HTTPOptions{TLS: &tls.Config{RootCAs: pool}, SessionCookie: "52f0-session", UserFile: user, PassFile: pass}
	fsys, name, err := OpenHTTPFS(context.Background(), srv.URL+"/folder/vm/vm.vmdk?dcPath=DC0&dsName=ds", o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, fsys, name); string(got) != "0123456789" {
		t.Fatalf("read %q", got)
	}
	for _, v := range seen {
		if v != "52f0-session" {
			t.Fatalf("requests carried %q, want only the preset session cookie", seen)
		}
	}
	if len(seen) == 0 {
		t.Fatal("no request")
	}
	// The caller's TLS config is the only trust: without the server's CA
	// in it, the certificate is refused.
	o.TLS = &tls.Config{}
	fsys, name, _ = OpenHTTPFS(context.Background(), srv.URL+"/folder/vm/vm.vmdk", o, io.Discard)
	var cve *tls.CertificateVerificationError
	if _, err := fsys.Open(name); !errors.As(err, &cve) {
		t.Fatalf("a TLS config without the server's CA: %v", err)
	}
	if _, _, err := OpenHTTPFS(context.Background(), "http://esxi/folder/vm.vmdk", HTTPOptions{SessionCookie: "52f0-session"}, io.Discard); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("a session cookie for http://: %v", err)
	}
}
