package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// --zero-mode on a device full of old data (0xff): probe and write make
// the source's zero ranges read zeros, skip leaves the old bytes there;
// every mode writes the data, and none touches the device past the disk.
func TestImportZeroModes(t *testing.T) {
	f := getFixture(t)
	dev := loopDevice(t, 32<<20)
	// The stream's zero gaps and the raw file's zero blocks reach the
	// device by different paths; the modes differ in the device's Zero.
	for _, tc := range [][2]string{{"stream.vmdk", "probe"}, {"stream.vmdk", "write"}, {"stream.vmdk", "skip"}, {"disk.raw", "skip"}} {
		name, mode := tc[0], tc[1]
		t.Run(name+" "+mode, func(t *testing.T) {
			fillDevice(t, dev, 0xff)
			code, _, _, errs := runImportTest(t, "--target", dev, "--zero-mode", mode, filepath.Join(f.dir, name))
			if code != 0 {
				t.Fatalf("exit %d %s", code, errs)
			}
			got, err := os.ReadFile(dev)
			if err != nil {
				t.Fatal(err)
			}
			old := byte(0)
			if mode == "skip" {
				old = 0xff
			}
			// Each 4 KiB block: the source's data, or where the source
			// is all zeros, zeros (skip: the old bytes).
			for off := 0; off < len(f.raw); off += 4096 {
				want := f.raw[off : off+4096]
				if bytes.Equal(want, make([]byte, 4096)) {
					want = bytes.Repeat([]byte{old}, 4096)
				}
				if !bytes.Equal(got[off:off+4096], want) {
					t.Fatalf("the block at %d is not the source's data, or %#x where the source is zero", off, old)
				}
			}
			if !bytes.Equal(got[24<<20:], bytes.Repeat([]byte{0xff}, 8<<20)) {
				t.Fatal("the device was written past the disk's end")
			}
		})
	}
}

// sectorsWritten is the number of 512-byte sectors the kernel has written
// to dev (/sys/block/<dev>/stat, its 7th field).
func sectorsWritten(t *testing.T, dev string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b))
	n, err := strconv.ParseInt(fields[6], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Probe writes zeros only where the device does not already read zeros: on
// a device holding old data in its first MiB and zeros after, it writes
// that MiB and the disk's data, not the 18 MiB that already read zeros.
// Write mode zeroes them all.
func TestImportProbeWritesOnlyWhatItMust(t *testing.T) {
	f := getFixture(t)
	written := map[string]int64{}
	for _, mode := range []string{"probe", "write"} {
		backing := filepath.Join(t.TempDir(), "dev.img")
		os.WriteFile(backing, bytes.Repeat([]byte{0xff}, 1<<20), 0o644)
		os.Truncate(backing, 32<<20)
		dev := attachLoop(t, backing)
		before := sectorsWritten(t, dev)
		code, _, _, errs := runImportTest(t, "--target", dev, "--zero-mode", mode, filepath.Join(f.dir, "stream.vmdk"))
		if code != 0 {
			t.Fatalf("%s: exit %d %s", mode, code, errs)
		}
		written[mode] = (sectorsWritten(t, dev) - before) * 512
		got, _ := os.ReadFile(dev)
		if !bytes.Equal(got[:24<<20], f.raw) {
			t.Fatalf("%s: device content differs", mode)
		}
	}
	// Data: 5 MiB and 64 KiB; old data to zero: 1 MiB.
	if written["probe"] > 8<<20 {
		t.Fatalf("probe wrote %d bytes: zeros where the device read zeros", written["probe"])
	}
	if written["write"] < 20<<20 {
		t.Fatalf("write mode wrote %d bytes: it did not zero every zero range", written["write"])
	}
	t.Logf("written: probe %d bytes, write %d bytes", written["probe"], written["write"])
}
