package main

import (
	"bytes"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

	// Allowed explicitly, the http:// URL works; the redirect still goes
	// to another host (another port), where credentials never follow.
	dir = t.TempDir()
	code, r, _, errs := runImportTest(t, "--target", dir, "--ca-file", ca, "--bearer-token-file", tok, "--insecure-allow-credentials-over-http", ts.URL+"/stream.vmdk")
	wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	before := len(plain.rangeStarts())
	dir = t.TempDir()
	code, r, _, _ = runImportTest(t, "--target", dir, "--ca-file", ca, "--bearer-token-file", tok, "--insecure-allow-credentials-over-http", redirect.URL+"/stream.vmdk")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonSourceError)
	if !strings.Contains(r.Message, "another host") || len(plain.rangeStarts()) != before {
		t.Fatalf("a redirect to another port with the token: %q, %d requests", r.Message, len(plain.rangeStarts())-before)
	}
}

// Basic auth from --username-file and --password-file, or from a mounted
// Secret's username and password (--credentials-dir): the server lets in
// only the right pair.
func TestImportBasicAuth(t *testing.T) {
	f := getFixture(t)
	s := &server{files: map[string][]byte{"stream.vmdk": f.stream}, user: "alice", pass: "pa ss:w0rd"}
	ts := httptest.NewTLSServer(s)
	defer ts.Close()
	tmp := t.TempDir()
	ca := filepath.Join(tmp, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644)
	secret := filepath.Join(tmp, "secret") // as a Secret is mounted: one file a key
	os.Mkdir(secret, 0o755)
	user, pass := filepath.Join(secret, "username"), filepath.Join(secret, "password")
	os.WriteFile(user, []byte("alice\n"), 0o600)
	os.WriteFile(pass, []byte("pa ss:w0rd"), 0o600)
	wrong := filepath.Join(tmp, "wrong")
	os.WriteFile(wrong, []byte("hunter2"), 0o600)
	src := ts.URL + "/stream.vmdk"

	for name, args := range map[string][]string{
		"files":           {"--username-file", user, "--password-file", pass},
		"credentials-dir": {"--credentials-dir", secret},
	} {
		dir := t.TempDir()
		code, r, _, errs := runImportTest(t, append([]string{"--target", dir, "--ca-file", ca}, append(args, src)...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d %s", name, code, errs)
		}
		wantImported(t, code, r, errs, filepath.Join(dir, "disk.img"), f.raw)
	}
	dir := t.TempDir()
	code, r, _, _ := runImportTest(t, "--target", dir, "--ca-file", ca, src)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonUnauthorized)
	code, r, _, _ = runImportTest(t, "--target", dir, "--ca-file", ca, "--username-file", user, "--password-file", wrong, src)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonUnauthorized)
	if strings.Contains(r.Message, "hunter2") {
		t.Fatalf("the password in the message: %s", r.Message)
	}
	code, r, _, _ = runImportTest(t, "--target", dir, "--ca-file", ca, "--username-file", user, src)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	// Basic auth is a credential too: not over plain http://.
	_, plain := newServer(t, f, func(s *server) { s.user, s.pass = "alice", "pa ss:w0rd" })
	code, r, _, _ = runImportTest(t, "--target", dir, "--credentials-dir", secret, plain.URL+"/stream.vmdk")
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments)
	emptyDir(t, dir)
}

// A credential or CA file must be a small regular file: a FIFO in its
// place (a hostile or broken mount) used to block open(2) until the
// Job's deadline, and /dev/zero read forever.
func TestHostileCredentialFiles(t *testing.T) {
	f := getFixture(t)
	ts := httptest.NewTLSServer(&server{files: map[string][]byte{"stream.vmdk": f.stream}})
	defer ts.Close()
	tmp := t.TempDir()
	fifo := filepath.Join(tmp, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(tmp, "huge")
	os.WriteFile(huge, bytes.Repeat([]byte("t"), 1<<20), 0o600)
	fifoDir := filepath.Join(tmp, "secret")
	os.Mkdir(fifoDir, 0o755)
	syscall.Mkfifo(filepath.Join(fifoDir, "token"), 0o600)
	for name, args := range map[string][]string{
		"FIFO as --ca-file":                {"--ca-file", fifo},
		"FIFO as --bearer-token-file":      {"--bearer-token-file", fifo},
		"FIFO as a credentials-dir token":  {"--credentials-dir", fifoDir},
		"FIFO as --password-file":          {"--username-file", huge, "--password-file", fifo},
		"character device as a token file": {"--bearer-token-file", "/dev/zero"},
		"a token file of a megabyte":       {"--bearer-token-file", huge},
	} {
		t.Run(name, func(t *testing.T) {
			run, r, dir := importResult(t, bound{Time: 5 * time.Second, Mem: 38 << 20}, nil, append(args, ts.URL+"/stream.vmdk")...)
			if run.Elapsed > time.Second {
				t.Errorf("took %v to refuse", run.Elapsed)
			}
			wantOutcome(t, run, r, dir, jobapi.ExitPermanent, jobapi.ReasonInvalidArguments, nil)
		})
	}
}
