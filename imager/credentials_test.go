package main

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// Credentials never travel over plain http:// unless asked for: not to an
// http:// URL, and not after an https:// server redirects there.
func TestImportCredentialsOverPlainHTTP(t *testing.T) {
	f := getFixture(t)
	plain, ts := newServer(t, f, func(s *server) { s.token = "s3cret" })
	tmp := t.TempDir()
	tok := filepath.Join(tmp, "token")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)

	dir := t.TempDir()
	code, r, _, _ := runImportTest(t, "--target", dir, "--bearer-token-file", tok, ts.URL+"/stream.vmdk")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	if !strings.Contains(r.Message, "plain http://") {
		t.Errorf("message %q does not say why", r.Message)
	}
	if got := plain.rangeStarts(); len(got) != 0 {
		t.Fatalf("the http server was asked %d times", len(got))
	}
	emptyDir(t, dir)

	// An https server that sends the client down to the http one.
	redirect := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ts.URL+r.URL.Path, http.StatusFound)
	}))
	defer redirect.Close()
	ca := filepath.Join(tmp, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: redirect.Certificate().Raw}), 0o644)
	code, r, _, _ = runImportTest(t, "--target", dir, "--ca-file", ca, "--bearer-token-file", tok, redirect.URL+"/stream.vmdk")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonSourceError)
	if got := plain.rangeStarts(); len(got) != 0 {
		t.Fatalf("the redirect was followed with the token: %d requests", len(got))
	}
	emptyDir(t, dir)

	// Allowed explicitly, both work.
	for _, src := range []string{ts.URL, redirect.URL} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, "--target", dir, "--ca-file", ca, "--bearer-token-file", tok, "--insecure-allow-credentials-over-http", src+"/stream.vmdk")
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	}
}
