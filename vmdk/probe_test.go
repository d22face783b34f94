package vmdk

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestProbe(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Kind
	}{
		{"KDMV\x01", KindSparse},
		{"COWD\x01", KindCOWD},
		{"# Disk DescriptorFile\n\n  \r\n# x\nversion=1\n", KindDescriptor},
		{"\r\nVERSION = 1\r\n", KindDescriptor},
	} {
		if k, err := Probe(strings.NewReader(c.in)); k != c.want || err != nil {
			t.Errorf("Probe(%q) = %v, %v", c.in, k, err)
		}
	}
	for _, in := range []string{"", "QFI\xfb", "hello\nversion=1\n", "\x00\x00\x00\x00"} {
		if _, err := Probe(strings.NewReader(in)); !errors.Is(err, ErrNotVMDK) {
			t.Errorf("Probe(%q) = %v, want ErrNotVMDK", in, err)
		}
	}
}

func TestProbeDescriptorKeyOrder(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "d-flat.vmdk"), bytes.Repeat([]byte{1}, 1024))
	writeFile(t, filepath.Join(dir, "d.vmdk"), []byte("CID=00000001\nparentCID=ffffffff\nversion=1\ncreateType=\"monolithicFlat\"\nRW\t2\tFLAT\t\"d-flat.vmdk\"\t0\n"))
	d := mustOpen(t, filepath.Join(dir, "d.vmdk"), Options{})
	sameBytes(t, "descriptor with version later and tabs", readAll(t, d), bytes.Repeat([]byte{1}, 1024))
}
