package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The populator's pod runs imager as KubeVirt's qemu user, 107:107
// (runAsUser, runAsGroup and fsGroup: controllers' DiskUID and DiskGID),
// on a volume whose root the kubelet gives group 107, setgid. imager has
// no ownership flag: disk.img belongs to whoever writes it. As that user,
// the disk is 107:107, readable by qemu (0644), and sparse: a 24 MiB disk
// of 5 MiB data allocates about 5 MiB.
func TestImportDiskOwnerAndSparse(t *testing.T) {
	const uid, gid = 107, 107
	f := getFixture(t)
	_, ts := newServer(t, f, nil)
	// Directories the unprivileged child can reach: t.TempDir's are 0700.
	base, err := os.MkdirTemp("", "import-owner-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	// The test binary, where uid 107 may run it.
	bin := filepath.Join(base, "imager.test")
	if err := copyFile(os.Args[0], bin); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"disk.raw", "stream.vmdk"} {
		vol := filepath.Join(base, "vol-"+name) // as fsGroup leaves it
		os.Mkdir(vol, 0o755)
		if err := os.Chown(vol, 0, gid); err != nil {
			t.Fatalf("chown (needs root): %v", err)
		}
		os.Chmod(vol, 0o2775|os.ModeSetgid)
		res := filepath.Join(vol, "result.json")
		cmd := exec.Command(bin, "import", "--target", vol, "--result-file", res, ts.URL+"/"+name)
		cmd.Env = append(os.Environ(), "IMAGER_TEST_MAIN=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v %s", name, err, out)
		}
		b, _ := os.ReadFile(res)
		r, err := jobapi.Parse(string(b))
		if err != nil || r.Phase != jobapi.Succeeded {
			t.Fatalf("%s: result %s %v", name, b, err)
		}
		disk := filepath.Join(vol, "disk.img")
		fi, err := os.Stat(disk)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid || fi.Mode().Perm() != 0o644 {
			t.Fatalf("%s: disk.img is %d:%d %v, want %d:%d -rw-r--r--", name, st.Uid, st.Gid, fi.Mode(), uid, gid)
		}
		if fi.Size() != int64(len(f.raw)) {
			t.Fatalf("%s: size %d", name, fi.Size())
		}
		if alloc := st.Blocks * 512; alloc > 6<<20 || alloc != r.AllocatedBytes {
			t.Fatalf("%s: %d bytes allocated (result says %d) for 5 MiB of data in %d: not sparse", name, alloc, r.AllocatedBytes, fi.Size())
		}
		if got, _ := os.ReadFile(disk); string(got) != string(f.raw) {
			t.Fatalf("%s: content differs", name)
		}
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
