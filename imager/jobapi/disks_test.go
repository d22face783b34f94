package jobapi

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The disks of an OVA with many disks of long names, with the longest
// message, still fit a termination message: the list is cut from its end
// and the rest counted; names are shortened; the caller's result is left
// as it was.
func TestWriteBoundsDisks(t *testing.T) {
	for _, n := range []int{3, 40, 200} {
		var disks []DiskResult
		for i := 0; i < n; i++ {
			disks = append(disks, DiskResult{Name: fmt.Sprintf("%03d-%s", i, strings.Repeat("n", 200)), VirtualSize: 1 << 40,
				AllocatedBytes: 1 << 39, SHA256: strings.Repeat("ab", 32)})
		}
		r := &Result{Phase: Succeeded, Reason: ReasonSucceeded, Message: strings.Repeat("m", 5000), Target: "/data", Disks: disks}
		p := filepath.Join(t.TempDir(), "r")
		if err := Write(p, r); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if len(b) > 4096 {
			t.Fatalf("%d disks: result is %d bytes", n, len(b))
		}
		got, err := Parse(string(b))
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Disks)+got.DisksOmitted != n || len(got.Disks) == 0 || n == 3 && got.DisksOmitted != 0 {
			t.Errorf("%d disks: %d listed, %d omitted", n, len(got.Disks), got.DisksOmitted)
		}
		for i, d := range got.Disks {
			if len(d.Name) > 64 || !strings.HasPrefix(d.Name, fmt.Sprintf("%03d-", i)) {
				t.Errorf("%d disks: disk %d named %q", n, i, d.Name)
			}
		}
		if len(r.Disks[0].Name) != 204 {
			t.Error("Write changed the caller's result")
		}
	}
}
