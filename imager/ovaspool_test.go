package main

import (
	"bufio"
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// --ova-disk all removes a disk's spooled file once the disk is written,
// before the next disk is read, so scratch space holds one disk's spool,
// never every one's: the OVA comes through a pipe, held inside the
// second disk's member, and the scratch directory is looked at then.
func TestImportOVAAllSpoolsOneAtATime(t *testing.T) {
	f := getFixture(t)
	raw := make([]byte, 1<<20)
	rand.New(rand.NewSource(13)).Read(raw)
	env := ovfOf(ovfFile{"vm-disk1.vmdk", "", len(f.raw)}, ovfFile{"vm-disk2.img", "", len(raw)})
	ova := ovaOf(t, m("vm.ovf", env), m("vm-disk1.vmdk", f.sparse), m("vm-disk2.img", raw))
	held := bytes.Index(ova, raw[:4096]) + 4096

	dir, scratch := t.TempDir(), t.TempDir()
	cmd := imagerCmd("import", "--target", dir, "--scratch-dir", scratch, "--ova-disk", "all", "-")
	in, _ := cmd.StdinPipe()
	errs, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		for sc := bufio.NewScanner(errs); sc.Scan(); {
			lines <- sc.Text()
		}
		close(lines)
	}()
	in.Write(ova[:held])
	spooled, timeout := false, time.After(20*time.Second)
	for second := false; !second; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("imager ended before the second disk")
			}
			spooled = spooled || strings.Contains(l, "spooling the source")
			second = strings.Contains(l, "OVA disk 1=")
		case <-timeout:
			t.Fatal("the second disk was not reached")
		}
	}
	// Logged once the first disk was written and the second's header
	// read: its spool is gone by then.
	if e, _ := os.ReadDir(scratch); !spooled || len(e) != 0 {
		t.Fatalf("spooled %v; scratch holds %v while the second disk is read", spooled, e)
	}
	in.Write(ova[held:])
	in.Close()
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"vm-disk1.vmdk": f.raw, "vm-disk2.img": raw} {
		if got, _ := os.ReadFile(filepath.Join(dir, name, "disk.img")); !bytes.Equal(got, want) {
			t.Errorf("%s differs", name)
		}
	}
}
