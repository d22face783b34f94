package main

import (
	"bytes"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// TestUsageErrors: a bad command line exits 2 from every command (check:
// 64, its 2 means corruptions) with one line on stderr, and a command with
// --result-file reports InvalidArguments there, permanent, wherever the
// flag stands (also after the argument that stopped the parse).
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "img.vmdk")
	if code, _, errs := imager("create", "-q", img, "1M"); code != 0 {
		t.Fatal(errs)
	}
	out := filepath.Join(dir, "out.vmdk")
	rows := map[string][][]string{
		"info": {{"--bogus", img}, {}, {img, img}, {"--output=xml", img}},
		"convert": {{"-O", "qcow2", img, out}, {img}, {"-O", "vmdk", "-o", "subformat=bogus", img, out},
			{"-O", "vmdk", "-o", "adapter_type=scsi9", img, out}, {"-f", "qcow2", "-O", "raw", img, out},
			{"-O", "raw", "-t", "sometimes", img, out}, {"-O", "vmdk", "-c", "10", img, out}, {"-O", "raw", "-c", "5", img, out},
			{"-O", "raw", "--result-file", filepath.Join(dir, "raw.json"), img, out}},
		"flatten": {{"-o", "nokey", img, out}, {img}, {"-o", "hwversion=x", img, out}, {"-o", "zeroed_grain=on,subformat=monolithicFlat", img, out}},
		"map":     {{}, {"--output=yaml", img}, {"-z", img}},
		"create": {{out, "-5368709120"}, {out, "-5G"}, {out, "0"}, {out, "abc"}, {out, "12Q"}, {out, "1000P"}, {out, "0.1"}, {out, "NaN"},
			{out}, {"-o", "zeroed_grain=maybe", out, "1M"}, {"-o", "subformat=monolithicFlat", "-b", img, out},
			{"-f", "qcow2", out, "1M"}, {out, "1M", "extra"}, {"-o", "adapter_type=", out, "1M"}, {"-o", "toolsversion=12345678901", out, "1M"}},
		"check":  {{}, {"--bogus", img}, {"--output=xml", img}, {img, img}},
		"commit": {{}, {"-x", img}, {img, img}},
		"rebase": {{}, {"-F", "raw", "-b", "", img}, {"--bogus", img}},
		"import": {{img}, {"--target", dir}, {"--target", dir, "--size", "-5G", img}, {"--target", dir, "--size", "0", img},
			{"--target", dir, "--target-format", "qcow2", img}, {"--target", dir, "--checksum", "md5:abc", img},
			{"--target", dir, "-o", "subformat=streamOptimized", img}, {"--target", dir, "--target-format", "vmdk", "-o", "subformat=nope", img},
			{"--target", dir, "--zero-mode", "sometimes", img}, {"--target", dir, "--fs-overhead", "1.5", img}, {"--target", dir, img, img}},
		"write":    {{"-P", "300", "0", "1M", img}, {"0", "-1M", img}, {"x", "1M", img}, {img}, {"0", "0", img}},
		"checksum": {{}, {"--size", "abc", img}, {"-f", "qcow2", img}, {"--size", "-1", img}},
		"compare":  {{img}, {"--bogus", img, img}, {"-f", "qcow2", img, img}, {img, img, img}},
		"apply-delta": {{img}, {"--target", out}, {"--target", out, "--expect-parent-cid", "12", img}, {"--target", out, "--expect-parent-cid", "0x123456", img},
			{"--target", out, "-t", "never", img}, {"--target", out, img, img}},
	}
	// The brief's own example: a negative size after the image name.
	rows["create"] = append(rows["create"], []string{"-q", "-o", "subformat=monolithicSparse", "/x/disk.vmdk", "-5368709120"})
	for _, c := range commands {
		if len(rows[c.name]) == 0 {
			t.Errorf("no usage rows for %s", c.name)
		}
	}
	for cmd, argvs := range rows {
		want := jobapi.ExitUsage
		if cmd == "check" {
			want = 64 // not the constant: a change to it must show here
		}
		takesResult := slices.ContainsFunc(commands, func(c command) bool { return c.name == cmd && c.results })
		for _, argv := range argvs {
			placements := [][]string{append([]string{cmd}, argv...)}
			if takesResult {
				res := filepath.Join(dir, "r.json")
				placements = [][]string{
					append([]string{cmd, "--result-file", res}, argv...),
					append(append([]string{cmd}, argv...), "--result-file", res),
				}
			}
			for _, args := range placements {
				os.Remove(filepath.Join(dir, "r.json"))
				code, _, errs := imager(args...)
				if code != want {
					t.Errorf("%q: exit %d, want %d (%s)", args, code, want, errs)
				}
				if strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.HasPrefix(errs, "imager "+cmd+": ") {
					t.Errorf("%q: stderr is not one line: %q", args, errs)
				}
				if !takesResult || slices.Contains(argv, "--result-file") {
					continue
				}
				b, err := os.ReadFile(filepath.Join(dir, "r.json"))
				if err != nil {
					t.Errorf("%q: no result: %v", args, err)
					continue
				}
				r, err := jobapi.Parse(string(b))
				if err != nil || r.Phase != jobapi.Failed || r.Reason != jobapi.ReasonInvalidArguments || !r.Permanent || r.Message == "" {
					t.Errorf("%q: result %s (%v)", args, b, err)
				}
			}
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a usage error wrote output")
	}
}

// TestNegativeSizeMessage: "-5G" is not reported as an unknown flag.
func TestNegativeSizeMessage(t *testing.T) {
	_, _, errs := imager("create", filepath.Join(t.TempDir(), "x.vmdk"), "-5G")
	if !strings.Contains(errs, "-5G: a negative number") {
		t.Fatalf("stderr %q", errs)
	}
}

func TestHelpFlag(t *testing.T) {
	code, _, errs := imager("create", "-h")
	if code != 0 || !strings.Contains(errs, "usage: imager create") || !strings.Contains(errs, "-result-file") {
		t.Fatalf("exit %d %q", code, errs)
	}
}

// TestImportRedactsURLs: neither the tokens of a URL's query nor its user
// info reach stderr or the result, whether the server answers 404, the
// connection is refused (net/http's own error quotes the URL), the image
// is bad, or the import succeeds; a URL with user info is refused.
func TestImportRedactsURLs(t *testing.T) {
	f := getFixture(t)
	_, ts := newServer(t, f, func(s *server) { s.files["bad.vmdk"] = f.sparse[:64<<10] })
	secrets := []string{"hunter2", "s3cr3t", "sig123", "alice"}
	withSecrets := func(base, path string) string {
		return base + path + "?token=s3cr3t&X-Amz-Signature=sig123"
	}
	dead := httptest.NewServer(nil)
	dead.Close()
	for _, c := range []struct {
		url    string
		code   int
		reason string
	}{
		{withSecrets(ts.URL, "/missing.vmdk"), jobapi.ExitPermanent, jobapi.ReasonSourceNotFound},
		{withSecrets(dead.URL, "/disk.vmdk"), jobapi.ExitTransient, jobapi.ReasonNetworkError},
		{withSecrets(ts.URL, "/bad.vmdk"), jobapi.ExitPermanent, jobapi.ReasonInvalidImage},
		{withSecrets(ts.URL, "/stream.vmdk"), jobapi.ExitOK, jobapi.ReasonSucceeded},
		{withSecrets(strings.Replace(ts.URL, "://", "://alice:hunter2@", 1), "/stream.vmdk"), jobapi.ExitPermanent, jobapi.ReasonInvalidArguments},
	} {
		dir := t.TempDir()
		res := filepath.Join(t.TempDir(), "r.json")
		code, stdout, errs := imager("import", "--result-file", res, "--retries", "2", "--retry-backoff", "1ms", "--target", dir, c.url)
		b, _ := os.ReadFile(res)
		r, err := jobapi.Parse(string(b))
		if err != nil || code != c.code || r.Reason != c.reason {
			t.Errorf("%s: exit %d, result %s (%v), stderr %s", c.reason, code, b, err, errs)
		}
		for _, s := range secrets {
			for name, text := range map[string]string{"stderr": errs, "stdout": stdout, "result": string(b)} {
				if strings.Contains(text, s) {
					t.Errorf("%s: %q in %s: %s", c.reason, s, name, text)
				}
			}
		}
		if c.code != 0 && !strings.Contains(errs, "REDACTED") {
			t.Errorf("%s: stderr does not show the redacted URL: %s", c.reason, errs)
		}
	}
}

// TestRedactionLayers checks each layer on its own (together they mask
// each other): the HTTP client's errors, the success message, and the
// stderr writer.
func TestRedactionLayers(t *testing.T) {
	f := getFixture(t)
	_, ts := newServer(t, f, nil)
	secret := func(base string) string {
		return strings.Replace(base, "://", "://alice:hunter2@", 1) + "/missing.vmdk?token=s3cr3t"
	}
	clean := func(what, text string) {
		t.Helper()
		for _, s := range []string{"alice", "hunter2", "s3cr3t"} {
			if strings.Contains(text, s) {
				t.Errorf("%s: %q in %q", what, s, text)
			}
		}
	}
	// The HTTP errors' redaction: internal/source's TestHTTPErrorsRedacted.
	j := &importJob{source: secret(ts.URL)}
	j.finishResult(nil)
	clean("success message", j.res.Message)
	var b bytes.Buffer
	if n, err := (redactingWriter{&b}).Write([]byte("x https://alice:hunter2@h/?token=s3cr3t\n")); err != nil || n != 40 {
		t.Fatalf("Write: %d %v", n, err)
	}
	clean("stderr", b.String())
}
