package main

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// A gzip or zstd raw disk cut short (its stream stops inside its data)
// fails as a source that ended early, SourceError and transient, from a
// file and from stdin, with nothing written: its decompressor's
// unexpected EOF was taken for the disk's end, and a short disk imported.
func TestImportCompressedCutShort(t *testing.T) {
	raw := make([]byte, 1<<20)
	rand.New(rand.NewSource(11)).Read(raw)
	for name, z := range map[string][]byte{"gzip": gzipBytes(t, raw), "zstd": zstdBytes(t, raw)} {
		cut := z[:len(z)/2]
		src := filepath.Join(t.TempDir(), "disk.raw."+name)
		os.WriteFile(src, cut, 0o644)
		dir := t.TempDir()
		code, r, _, _ := runImportTest(t, "--target", dir, src)
		wantFailed(t, code, r, jobapi.ExitTransient, jobapi.ReasonSourceError)
		if !strings.Contains(r.Message, "inside its compressed stream") {
			t.Errorf("%s: %s", name, r.Message)
		}
		emptyDir(t, dir)

		res := filepath.Join(t.TempDir(), "result.json")
		dir = t.TempDir()
		cmd := imagerCmd("import", "--result-file", res, "--target", dir, "-")
		cmd.Stdin = bytes.NewReader(cut)
		out, _ := cmd.CombinedOutput()
		b, _ := os.ReadFile(res)
		if r, err := jobapi.Parse(string(b)); err != nil || cmd.ProcessState.ExitCode() != jobapi.ExitTransient || r.Reason != jobapi.ReasonSourceError {
			t.Errorf("%s: stdin: exit %d %v %s", name, cmd.ProcessState.ExitCode(), err, out)
		}
		emptyDir(t, dir)
	}
}
