package source

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/vmdkpop/vmdkpop/test/datastore"
)

// A redirect to another host (a CDN, an object store) is followed when no
// credentials are in play; with credentials it is refused, and they never
// reach the other host.
func TestHTTPFSRedirectOtherHost(t *testing.T) {
	flat := randomBytes(2<<20+7, 4)
	files := map[string][]byte{"vm-flat.vmdk": flat}
	for _, withCreds := range []bool{false, true} {
		ds, _, o := serveDatastore(t, files)
		if !withCreds {
			ds.User, ds.Password, o.UserFile, o.PassFile = "", "", "", ""
		}
		hosts := datastore.NewOtherHost(ds)
		defer hosts.Close()
		fsys, _, err := OpenHTTPFS(context.Background(), ds.URL(hosts.Redirect.URL, "vm.vmdk"), o, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		f, err := fsys.Open("vm-flat.vmdk")
		if withCreds {
			if !errors.Is(err, ErrOtherHost) {
				t.Fatalf("with credentials: %v, want ErrOtherHost", err)
			}
			if n := hosts.Requests.Load(); n != 0 {
				t.Fatalf("with credentials, %d requests reached the other host (%d with Authorization)", n, hosts.Authorized.Load())
			}
			continue
		}
		if err != nil {
			t.Fatalf("without credentials: %v", err)
		}
		got := make([]byte, len(flat))
		if _, err := f.(io.ReaderAt).ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if !bytes.Equal(got, flat) {
			t.Fatal("without credentials: the redirected file reads differently")
		}
		if hosts.Requests.Load() == 0 {
			t.Fatal("nothing was read from the other host")
		}
	}
}

// Hosts are compared with the scheme's default port made explicit: to
// https, esxi and esxi:443 are one host, esxi:8443 another; http://esxi
// and https://esxi are one host (plain http:// is refused apart).
func TestHTTPRedirectDefaultPort(t *testing.T) {
	tok := writeTemp(t, "token\n")
	for _, tc := range []struct {
		from, to string
		ok       bool
	}{
		{"https://esxi/folder/vm.vmdk", "https://esxi:443/folder/vm.vmdk", true},
		{"https://ESXI:443/folder/vm.vmdk", "https://esxi/folder/vm.vmdk", true},
		{"https://esxi/folder/vm.vmdk", "https://esxi:8443/folder/vm.vmdk", false},
		{"https://esxi/folder/vm.vmdk", "https://vcenter/folder/vm.vmdk", false},
		{"http://esxi/folder/vm.vmdk", "http://esxi:80/folder/vm.vmdk", true},
		{"https://esxi/folder/vm.vmdk", "http://esxi/folder/vm.vmdk", true},
		{"https://esxi/folder/vm.vmdk", "http://esxi:8080/folder/vm.vmdk", false},
		{"https://esxi:8443/folder/vm.vmdk", "https://esxi/folder/vm.vmdk", false},
	} {
		h, err := newHTTPClient(tc.from, HTTPOptions{TokenFile: tok, InsecureCreds: true}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		to, _ := url.Parse(tc.to)
		from, _ := url.Parse(tc.from)
		err = h.checkRedirect(&http.Request{URL: to}, []*http.Request{{URL: from}})
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrOtherHost) {
			t.Errorf("%s -> %s: %v", tc.from, tc.to, err)
		}
	}
}
