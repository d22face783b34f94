package jobapi

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A result naming a deep chain of long file names, with the longest
// message, still fits a termination message (4096 bytes).
func TestWriteBoundsVSphere(t *testing.T) {
	long := strings.Repeat("x", 1000)
	var files []string
	for i := 0; i < 255; i++ {
		files = append(files, "[datastore1] "+long)
	}
	r := &Result{Phase: Failed, Reason: ReasonSourceNotFound, Message: strings.Repeat("m", 5000),
		VSphere: &VSphereResult{VMName: long, InstanceUUID: long, DiskKey: -1 << 31, DiskLabel: long, Snapshot: long, BackingFiles: files, CapacityBytes: 1 << 40,
			DeltaFrom: long, BaseTop: long, DeltaLinks: 254}}
	p := filepath.Join(t.TempDir(), "r")
	if err := Write(p, r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if len(b) > 4096 {
		t.Fatalf("result is %d bytes", len(b))
	}
	got, err := Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	v := got.VSphere
	if len(v.BackingFiles) != maxBackingFiles || !strings.Contains(v.BackingFiles[maxBackingFiles-2], "248 more") {
		t.Errorf("backing files %q", v.BackingFiles)
	}
	if len(v.DeltaFrom) != 80 || len(v.BaseTop) != 80 || v.DeltaLinks != 254 || len(v.InstanceUUID) != 40 || v.DiskKey != -1<<31 || len(v.DiskLabel) != 80 {
		t.Errorf("delta import's part: %q, %q, %d; instance %q, disk key %d, label %q", v.DeltaFrom, v.BaseTop, v.DeltaLinks, v.InstanceUUID, v.DiskKey, v.DiskLabel)
	}
	if len(r.VSphere.BackingFiles) != 255 {
		t.Error("Write changed the caller's result")
	}
}
