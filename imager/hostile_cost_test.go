package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The cost class of issue 12 through the commands: images of huge virtual
// size made from tiny files convert, map, compare and checksum at a cost
// in proportion to what they allocate, and what cannot be written is
// refused before the copy.

// bareKDMV writes a hosted sparse extent of capacity sectors in 1 MiB
// grains, its GD at sector 1 (a hole, so a 512 TiB GD of 4 MiB costs
// nothing), and one 1 MiB grain of 0xcd as the disk's last grain when far
// is set.
func bareKDMV(t *testing.T, path string, capacity uint64, far bool) {
	t.Helper()
	const grain, gtes = 2048, 512
	gdEntries := (capacity + grain*gtes - 1) / (grain * gtes)
	gdEnd := 1 + (gdEntries*4+511)/512
	h := make([]byte, 512)
	copy(h, "KDMV")
	le := binary.LittleEndian
	le.PutUint32(h[4:], 1)
	le.PutUint32(h[8:], 1) // newline check
	le.PutUint64(h[12:], capacity)
	le.PutUint64(h[20:], grain)
	le.PutUint32(h[44:], gtes)
	le.PutUint64(h[56:], 1)
	le.PutUint64(h[64:], gdEnd)
	copy(h[73:], "\n \r\n")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteAt(h, 0)
	size := int64(gdEnd) * 512
	if far {
		last := (capacity/grain - 1) // the last grain
		gt, at := gdEnd, gdEnd+4     // its table, then the grain
		f.WriteAt(le.AppendUint32(nil, uint32(gt)), 512+int64(last/gtes)*4)
		f.WriteAt(le.AppendUint32(nil, uint32(at)), int64(gt)*512+int64(last%gtes)*4)
		f.WriteAt(bytes.Repeat([]byte{0xcd}, grain*512), int64(at)*512)
		size = int64(at+grain) * 512
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// sharedTables is 2 TiB in 64 KiB grains whose 2^16 GD entries all point
// at one table holding one grain: 2^17 mappings that cannot merge.
func sharedTables(t *testing.T, path string) {
	t.Helper()
	const n, gtes = 1 << 16, 512
	gt := int64(1 + n*4/512)
	le := binary.LittleEndian
	h := make([]byte, 512)
	copy(h, "KDMV")
	le.PutUint32(h[4:], 1)
	le.PutUint32(h[8:], 1)
	le.PutUint64(h[12:], n*gtes*128)
	le.PutUint64(h[20:], 128)
	le.PutUint32(h[44:], gtes)
	le.PutUint64(h[56:], 1)
	le.PutUint64(h[64:], uint64(gt+4))
	copy(h[73:], "\n \r\n")
	img := make([]byte, (gt+4+128)*512)
	copy(img, h)
	for i := range n {
		le.PutUint32(img[512+4*i:], uint32(gt))
	}
	le.PutUint32(img[gt*512:], uint32(gt+4))
	copy(img[(gt+4)*512:], bytes.Repeat([]byte{0xab}, 128*512))
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
}

const (
	sectors512TiB = uint64(1) << 40
	sectors15TiB  = uint64(15) << 31
)

func TestHostileCostCommands(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.vmdk")
	bareKDMV(t, empty, sectors512TiB, false)
	far := filepath.Join(dir, "far.vmdk")
	bareKDMV(t, far, sectors512TiB, true)
	empty15 := filepath.Join(dir, "empty15.vmdk")
	bareKDMV(t, empty15, sectors15TiB, false)
	farOffset := int64(sectors512TiB)*512 - 1<<20
	// A sparse raw file of 1.5 TiB storing 8 KiB: a raw source costs what
	// it stores too.
	sparseRaw := filepath.Join(dir, "sparse.raw")
	if err := os.WriteFile(sparseRaw, []byte("first bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(sparseRaw, 3<<39); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(sparseRaw, os.O_WRONLY, 0); err == nil {
		f.WriteAt([]byte("last bytes"), 3<<39-4096)
		f.Close()
	}
	fromRaw := filepath.Join(dir, "from-raw.vmdk")
	// The same 1.5 TiB file as the FLAT extent of a monolithicFlat image.
	flat := filepath.Join(dir, "flat.vmdk")
	os.WriteFile(flat, []byte(fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW %d FLAT \"sparse.raw\" 0\n", 3<<39/512)), 0o644)
	cases := []struct {
		name string
		args []string
		code int
		// out and errs must appear in stdout and stderr.
		out, errs string
		check     func(t *testing.T, stdout string)
		b         bound
	}{{
		name: "map of an empty 512 TiB image",
		args: []string{"map", "--output=json", empty},
		out:  `"length": 562949953421312`,
		check: func(t *testing.T, stdout string) {
			wantMappings(t, stdout, 1)
		},
		b: bound{Time: 2 * time.Second, Mem: 22 << 20},
	}, {
		name: "human map of a 512 TiB image with one grain at the far end",
		args: []string{"map", far},
		out:  fmt.Sprintf("%#-20x%#-20x", farOffset, 1<<20),
		b:    bound{Time: 2 * time.Second, Mem: 22 << 20},
	}, {
		name: "convert -O raw of an empty 15 TiB image",
		args: []string{"convert", "-O", "raw", empty15, filepath.Join(dir, "out15.raw")},
		check: func(t *testing.T, _ string) {
			fi, err := os.Stat(filepath.Join(dir, "out15.raw"))
			if err != nil || fi.Size() != int64(sectors15TiB)*512 || fi.Sys().(*syscall.Stat_t).Blocks != 0 {
				t.Fatalf("out15.raw: %v, want an empty %d-byte file", err, int64(sectors15TiB)*512)
			}
			os.Remove(filepath.Join(dir, "out15.raw"))
		},
		b: bound{Time: 2 * time.Second, Mem: 22 << 20},
	}, {
		name: "convert -O vmdk of a sparse 1.5 TiB raw file",
		args: []string{"convert", "-f", "raw", "-O", "vmdk", sparseRaw, fromRaw},
		b:    bound{Time: 2 * time.Second, Mem: 30 << 20},
	}, {
		name: "compare of the sparse raw file with its conversion",
		args: []string{"compare", "-f", "raw", sparseRaw, fromRaw},
		out:  "Images are identical.",
		b:    bound{Time: 2 * time.Second, Mem: 30 << 20},
	}, {
		name: "convert -O raw of a 1.5 TiB monolithicFlat storing 8 KiB",
		args: []string{"convert", "-O", "raw", flat, filepath.Join(dir, "flat.raw")},
		b:    bound{Time: 2 * time.Second, Mem: 30 << 20},
	}, {
		name: "compare of the monolithicFlat image with its raw conversion",
		args: []string{"compare", "-F", "raw", flat, filepath.Join(dir, "flat.raw")},
		out:  "Images are identical.",
		b:    bound{Time: 2 * time.Second, Mem: 30 << 20},
	}, {
		name: "compare of two empty 512 TiB images",
		args: []string{"compare", empty, empty},
		out:  "Images are identical.",
		b:    bound{Time: 2 * time.Second, Mem: 30 << 20},
	}, {
		name: "compare finds the one grain at the far end of 512 TiB",
		args: []string{"compare", empty, far},
		code: 1,
		out:  fmt.Sprintf("Content mismatch at offset %d!", farOffset),
		b:    bound{Time: 2 * time.Second, Mem: 30 << 20},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runBounded(t, c.b, nil, c.args...)
			if r.Code != c.code || !strings.Contains(r.Stdout, c.out) || !strings.Contains(r.Stderr, c.errs) {
				t.Fatalf("exit %d, stdout %.300q, stderr %q; want exit %d, %q, %q", r.Code, r.Stdout, r.Stderr, c.code, c.out, c.errs)
			}
			if c.check != nil {
				c.check(t, r.Stdout)
			}
		})
	}
}

// wantMappings decodes map's JSON and checks how many mappings it holds
// and that they tile the disk.
func wantMappings(t *testing.T, out string, n int) {
	t.Helper()
	var ms []mapJSON
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("map output is not JSON: %v", err)
	}
	if len(ms) != n {
		t.Fatalf("%d mappings, want %d", len(ms), n)
	}
	for i := 1; i < len(ms); i++ {
		if ms[i].Start != ms[i-1].Start+ms[i-1].Length {
			t.Fatalf("mapping %d starts at %d, after %d+%d", i, ms[i].Start, ms[i-1].Start, ms[i-1].Length)
		}
	}
}

// TestHostileCostRefusedUpFront: a raw target the filesystem cannot hold
// (EFBIG: a small ext2's largest file is about 16 GiB) and a device smaller
// than the disk are refused before anything is copied.
func TestHostileCostRefusedUpFront(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	big := filepath.Join(dir, "big.vmdk") // 32 GiB, one grain at its end
	bareKDMV(t, big, 64<<21, true)
	t.Run("raw output larger than the filesystem's largest file", func(t *testing.T) {
		ext2 := mountSmallExt2(t)
		out := filepath.Join(ext2, "disk.raw")
		r := runBounded(t, bound{Time: 2 * time.Second, Mem: 22 << 20}, nil, "convert", "-O", "raw", big, out)
		if r.Code != jobapi.ExitPermanent || !strings.Contains(r.Stderr, "more than a file on this filesystem can hold") {
			t.Fatalf("exit %d, stderr %q", r.Code, r.Stderr)
		}
		if e, _ := os.ReadDir(ext2); len(e) != 1 || e[0].Name() != "lost+found" {
			t.Fatalf("%s holds %v after the refusal", ext2, e)
		}
		// The same failure, in process, classified as the result would say.
		err := convert(context.Background(), []string{big, out}, "", "raw", vmdkOptions{}, 0, false, "writeback", &pathFlags{}, nil)
		if reason, permanent := classify(err); reason != jobapi.ReasonFileTooLarge || !permanent {
			t.Fatalf("%v classified %s (permanent %v), want %s", err, reason, permanent, jobapi.ReasonFileTooLarge)
		}
	})
	t.Run("import to a device smaller than the disk", func(t *testing.T) {
		dev := loopDevice(t, 16<<20)
		res := filepath.Join(t.TempDir(), "result.json")
		r := runBounded(t, bound{Time: 2 * time.Second, Mem: 22 << 20}, nil, "import", "--result-file", res, "--target", dev, big)
		b, err := os.ReadFile(res)
		if err != nil {
			t.Fatalf("exit %d, no result: %v (%s)", r.Code, err, r.Stderr)
		}
		res2, err := jobapi.Parse(string(b))
		if err != nil {
			t.Fatal(err)
		}
		wantFailed(t, r.Code, res2, jobapi.ExitPermanent, jobapi.ReasonTargetTooSmall)
	})
}

// TestHostileCostChecksum: checksum hashes zero ranges from memory rather
// than reading them, and still gives sha256 of the guest content (qemu's).
func TestHostileCostChecksum(t *testing.T) {
	dir := t.TempDir()
	qemu(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "c.vmdk", "256M")
	qemu(t, dir, "qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xa5 100M 3M", "-c", "write -P 0x11 255M 1M", "c.vmdk")
	qemu(t, dir, "qemu-img", "convert", "-f", "vmdk", "-O", "raw", "c.vmdk", "c.raw")
	f, err := os.Open(filepath.Join(dir, "c.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))
	r := runBounded(t, bound{Time: 10 * time.Second, Mem: 22 << 20}, nil, "checksum", filepath.Join(dir, "c.vmdk"))
	if r.Code != 0 || !strings.HasPrefix(r.Stdout, want) {
		t.Fatalf("exit %d, %q (%s), want %s", r.Code, r.Stdout, r.Stderr, want)
	}
}

// TestHostileCostMapStreams: map writes 2^17 mappings of a 200 KiB image as
// it finds them, never holding them all.
func TestHostileCostMapStreams(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "shared.vmdk")
	sharedTables(t, shared)
	r := runBounded(t, bound{Time: 5 * time.Second, Mem: 22 << 20}, nil, "map", "--output=json", shared)
	if r.Code != 0 {
		t.Fatalf("exit %d: %s", r.Code, r.Stderr)
	}
	wantMappings(t, r.Stdout, 1<<17)
}
