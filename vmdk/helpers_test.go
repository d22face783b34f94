package vmdk

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The interop tests need qemu-img and qemu-io (Debian qemu-utils). They fail,
// never skip, without them: .ci/run installs them.
func tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install qemu-utils (bash .ci/run does)", name)
	}
	return p
}

// sh runs a command in dir and returns its stdout.
func sh(t testing.TB, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(tool(t, name), args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// qemuIO applies qemu-io commands ("write -P 0xab 0 64k") to a VMDK.
func qemuIO(t testing.TB, dir, img string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "vmdk"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	sh(t, dir, "qemu-io", append(args, img)...)
}

// qemuRaw is qemu-img's view of an image's guest content.
func qemuRaw(t testing.TB, dir, img string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "qemu.raw")
	sh(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", img, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type qemuInfo struct {
	VirtualSize    int64 `json:"virtual-size"`
	FormatSpecific struct {
		Data struct {
			CID        uint32 `json:"cid"`
			ParentCID  uint32 `json:"parent-cid"`
			CreateType string `json:"create-type"`
		} `json:"data"`
	} `json:"format-specific"`
	BackingFilename string `json:"backing-filename"`
}

func qemuImgInfo(t testing.TB, dir, img string) qemuInfo {
	t.Helper()
	var info qemuInfo
	out := sh(t, dir, "qemu-img", "info", "-f", "vmdk", "--output=json", img)
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("qemu-img info: %v\n%s", err, out)
	}
	return info
}

// readAll reads a disk's whole content through ReadAt in uneven pieces, so
// reads start and end inside grains and across extents.
func readAll(t testing.TB, d *Disk) []byte {
	t.Helper()
	out := make([]byte, d.Size())
	step := 1<<20 + 12345
	for off := 0; off < len(out); off += step {
		end := min(off+step, len(out))
		if n, err := d.ReadAt(out[off:end], int64(off)); err != nil && !(err == io.EOF && off+n == len(out)) {
			t.Fatalf("ReadAt(%d, %d): %v", off, end-off, err)
		}
	}
	return out
}

func mustOpen(t testing.TB, path string, opts Options) *Disk {
	t.Helper()
	d, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// sameBytes fails with the first differing offset rather than a dump.
func sameBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: first difference at byte %d: %#x, want %#x", what, i, got[i], want[i])
			}
		}
	}
}

// mixedContent makes n bytes of disk-like content: random (incompressible)
// runs, text-like (compressible) runs and zero runs, in 64 KiB pieces.
func mixedContent(seed int64, n int) []byte {
	r := rand.New(rand.NewSource(seed))
	b := make([]byte, n)
	for off := 0; off < n; off += 64 << 10 {
		end := min(off+64<<10, n)
		switch r.Intn(4) {
		case 0: // zeros
		case 1:
			r.Read(b[off:end])
		default:
			words := []string{"vmdk ", "grain ", "table ", "kubernetes ", "volume ", "\n"}
			for i := off; i < end; {
				i += copy(b[i:end], words[r.Intn(len(words))])
			}
		}
	}
	return b
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFileT(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
