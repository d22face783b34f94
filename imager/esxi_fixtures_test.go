package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// What a datastore holds, imported from a local copy and straight from the
// datastore over HTTP: the two ways must agree, on the content of what
// reads and on the refusal (reason and way forward) of what does not.
func TestESXiFixturesLocalAndHTTP(t *testing.T) {
	const size = 20<<20 + 4096 // two 16 MiB grain tables, the last partial
	chain := func(o vmdktest.ChainOptions) func(t *testing.T, dir string) (string, []byte) {
		return func(t *testing.T, dir string) (string, []byte) {
			c, model := esxiChain(t, dir, size, o)
			return filepath.Base(c.Top), model
		}
	}
	descriptor := func(text string) func(t *testing.T, dir string) (string, []byte) {
		return func(t *testing.T, dir string) (string, []byte) {
			if err := os.WriteFile(filepath.Join(dir, "vm.vmdk"), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			// The file the line names exists, so only the refusal can stop it.
			if err := os.WriteFile(filepath.Join(dir, "vm-rdmp.vmdk"), make([]byte, size), 0o644); err != nil {
				t.Fatal(err)
			}
			return "vm.vmdk", nil
		}
	}
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, dir string) (top string, want []byte)
		msg   string // "" for an import that succeeds
	}{
		{name: "vmfs thin base under two seSparse snapshots", write: chain(vmdktest.ChainOptions{Deltas: 2, Seed: 31})},
		{name: "vmfsSparse snapshot under a seSparse one", write: chain(vmdktest.ChainOptions{Deltas: 2, Seed: 32, VMFSSparse: true})},
		{name: "seSparse snapshot not closed cleanly", write: func(t *testing.T, dir string) (string, []byte) {
			cid, err := vmdktest.WriteVMFSBase(dir, "vm", vmdktest.MixedContent(33, size), size, vmdktest.VMFSOptions{Thin: true})
			if err != nil {
				t.Fatal(err)
			}
			grains := []vmdktest.Grain{{Index: 3, Data: bytes.Repeat([]byte{0xd1}, vmdktest.GrainSize)}}
			if _, err := vmdktest.WriteSESparseDelta(dir, "vm-000001", "vm.vmdk", cid, size, grains, vmdktest.SESparseOptions{Dirty: true}); err != nil {
				t.Fatal(err)
			}
			return "vm-000001.vmdk", nil
		}, msg: "not closed cleanly"},
		{name: "vSAN object", write: descriptor(fmt.Sprintf("# Disk DescriptorFile\nversion=4\nCID=1b2c3d4e\nparentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\nRW %d VSANSPARSE \"vsan://52a7c0f8-27a3-5a0b-9cb3-3bb0c5e4d8a1\"\n", size/512)),
			msg: "vSAN objects are not files"},
		{name: "pass-through raw device mapping", write: descriptor(fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"vmfsPassthroughRawDeviceMap\"\n\n# Extent description\nRW %d VMFSRDMP \"vm-rdmp.vmdk\"\n", size/512)),
			msg: "the data is on the LUN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			top, want := tc.write(t, dir)
			_, url, creds := serveChain(t, &httpChain{dir: dir}, top, nil)
			for _, from := range []struct {
				name, source string
				args         []string
			}{
				{"local", filepath.Join(dir, top), nil},
				{"http", url, creds},
			} {
				target := t.TempDir()
				args := append(append([]string{"--target", target, "--retries", "0"}, from.args...), from.source)
				code, r, _, errs := runImportTest(t, args...)
				if tc.msg == "" {
					wantImported(t, code, r, errs, filepath.Join(target, "disk.img"), want)
					if r.Spooled {
						t.Fatalf("%s: spooled", from.name)
					}
					continue
				}
				wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonUnsupportedImage)
				if !strings.Contains(r.Message, tc.msg) {
					t.Fatalf("%s: message %q, want %q in it", from.name, r.Message, tc.msg)
				}
				emptyDir(t, target)
			}
		})
	}
}
