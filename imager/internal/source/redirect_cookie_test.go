package source

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"testing"
)

// A session cookie is a credential: once an https:// source holds one
// (ESXi's vmware_soap_session), a redirect down to http:// on the same
// host would send it in the clear (the jar sends a cookie without Secure
// to http:// too), so it is refused like one carrying basic auth or a
// token, with or without credentials files. Without a cookie, or from a
// source that was plain http:// already, it is followed.
func TestHTTPRedirectDowngradeWithSessionCookie(t *testing.T) {
	for _, tc := range []struct {
		from     string
		cookie   bool
		insecure bool
		refused  bool
	}{
		{"https://esxi/folder/vm.vmdk", true, false, true},
		{"https://esxi/folder/vm.vmdk", false, false, false},
		{"https://esxi/folder/vm.vmdk", true, true, false},
		{"http://esxi/folder/vm.vmdk", true, false, false},
	} {
		h, err := newHTTPClient(tc.from, HTTPOptions{InsecureCreds: tc.insecure}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		from, _ := url.Parse(tc.from)
		if tc.cookie {
			h.c.Jar.SetCookies(from, []*http.Cookie{{Name: sessionCookies[0], Value: "52abc"}})
			if h.sessionCookie(h.sess.home) == "" {
				t.Fatal("the jar holds no session cookie for the source")
			}
		}
		to, _ := url.Parse("http://esxi/folder/vm-flat.vmdk")
		err = h.checkRedirect(&http.Request{URL: to}, []*http.Request{{URL: from}})
		if refused := errors.Is(err, ErrCredentialsOverHTTP); refused != tc.refused || !tc.refused && err != nil {
			t.Errorf("%s (cookie %v, insecure %v) -> %s: %v, want refused %v", tc.from, tc.cookie, tc.insecure, to, err, tc.refused)
		}
	}
}
