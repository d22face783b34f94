package jobapi

import (
	"slices"
	"testing"
)

// The command lines the controllers' Jobs run today, flag for flag: the
// envtest specs assert the same.
func TestArgv(t *testing.T) {
	opts := VMDKOptions{Subformat: "monolithicSparse", AdapterType: "lsilogic", HWVersion: 7}
	for _, c := range []struct {
		got, want []string
	}{
		{CreateArgs{Quiet: true, ResultFile: ResultPath, Root: "/images", Options: opts, Image: "/images/blank/disk.vmdk", Size: 1 << 30}.Argv(),
			[]string{"create", "-q", "--result-file", "/dev/termination-log", "--root", "/images", "-o", "subformat=monolithicSparse,adapter_type=lsilogic,hwversion=7", "/images/blank/disk.vmdk", "1073741824"}},
		{ConvertArgs{TargetFormat: "vmdk", Options: VMDKOptions{Subformat: "twoGbMaxExtentSparse"}, ResultFile: ResultPath, Root: "/images", Source: "/images/c/disk.vmdk", Target: "/images/flat/disk.vmdk"}.Argv(),
			[]string{"convert", "-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "--result-file", "/dev/termination-log", "--root", "/images", "/images/c/disk.vmdk", "/images/flat/disk.vmdk"}},
		{InfoArgs{ResultFile: ResultPath, Root: "/images", Image: "/images/base/disk.vmdk"}.Argv(),
			[]string{"info", "--result-file", "/dev/termination-log", "--root", "/images", "/images/base/disk.vmdk"}},
		{ImportArgs{ResultFile: ResultPath, Target: "/target", TargetFormat: "raw", FSOverhead: FSOverhead, Root: "/images", Source: "/images/c/disk.vmdk"}.Argv(),
			[]string{"import", "--result-file", "/dev/termination-log", "--target", "/target", "--target-format", "raw", "--fs-overhead", "0.06", "--root", "/images", "/images/c/disk.vmdk"}},
		{ImportArgs{ResultFile: ResultPath, Target: "/images/u", TargetFormat: "vmdk", Options: VMDKOptions{Subformat: "monolithicSparse"}, Size: 2 << 30, Root: "/source", Source: "/source/vms/disk.vmdk"}.Argv(),
			[]string{"import", "--result-file", "/dev/termination-log", "--target", "/images/u", "--target-format", "vmdk", "-o", "subformat=monolithicSparse", "--size", "2147483648", "--root", "/source", "/source/vms/disk.vmdk"}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("got  %q\nwant %q", c.got, c.want)
		}
	}
}

func TestRequiredBytes(t *testing.T) {
	const gib = 1 << 30
	if got := RequiredBytes(10*gib, Block); got != 10*gib {
		t.Errorf("block: %d", got)
	}
	got := RequiredBytes(10*gib, Filesystem)
	if got%(1<<20) != 0 || float64(got)*(1-FSOverhead) < float64(DiskBytes(10*gib)) {
		t.Errorf("filesystem: %d leaves less than the disk's %d bytes after %v", got, DiskBytes(10*gib), FSOverhead)
	}
	if RequiredBytesOverhead(10*gib, Filesystem, 0.2) <= got {
		t.Error("a larger overhead needs a larger PVC")
	}
}

func TestVSphereArgv(t *testing.T) {
	got := ImportArgs{ResultFile: ResultPath, Target: "/target", TargetFormat: "raw", CredentialsDir: "/creds",
		VSphere: &VSphereArgs{URL: "https://vc/sdk", Thumbprint: "AB:CD", UUID: "u-1", DiskIndex: 1, Snapshot: "s1", Transport: TransportNFC}}.Argv()
	want := []string{"import", "--result-file", "/dev/termination-log", "--target", "/target", "--target-format", "raw", "--credentials-dir", "/creds",
		"--vsphere-url", "https://vc/sdk", "--vsphere-thumbprint", "AB:CD", "--vsphere-uuid", "u-1", "--vsphere-disk-index", "1", "--vsphere-snapshot", "s1", "--vsphere-transport", "nfc"}
	if !slices.Equal(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// A delta import (warm migration) and the apply-delta that brings a raw
// disk to its snapshot.
func TestDeltaArgv(t *testing.T) {
	for _, c := range []struct{ got, want []string }{
		{ImportArgs{ResultFile: ResultPath, Target: "/images/s2", TargetFormat: "vmdk", Root: "/images", Backing: "/images/s1/disk.vmdk",
			VSphere: &VSphereArgs{URL: "https://vc/sdk", MoRef: "vm-42", Snapshot: "s2", DeltaFrom: "s1", Transport: TransportDatastore}}.Argv(),
			[]string{"import", "--result-file", "/dev/termination-log", "--target", "/images/s2", "--target-format", "vmdk", "--root", "/images", "-b", "/images/s1/disk.vmdk",
				"--vsphere-url", "https://vc/sdk", "--vsphere-moref", "vm-42", "--vsphere-snapshot", "s2", "--vsphere-transport", "datastore", "--vsphere-delta-from", "s1"}},
		{ApplyDeltaArgs{ResultFile: ResultPath, Root: "/images", Target: "/target/disk.img", ExpectParentCID: "0a1b2c3d", Delta: "/images/s2/disk.vmdk"}.Argv(),
			[]string{"apply-delta", "--result-file", "/dev/termination-log", "--root", "/images", "--target", "/target/disk.img", "--expect-parent-cid", "0a1b2c3d", "/images/s2/disk.vmdk"}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("got  %q\nwant %q", c.got, c.want)
		}
	}
}
