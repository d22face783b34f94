package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// The tests here make the real conditions of README's "Exit codes and
// reasons" (a filesystem's file size limit, a read-only mount, a full
// volume, a user without write permission, a device that fails writes)
// and check the exit code and the result each produces.

// needRoot: mounts and other users take root. In CI (CI=true) not being
// root fails the test, so the table is never silently left unchecked.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (mounts, other users); CI=true does not skip it")
	}
	t.Skip("needs root (mounts, other users)")
}

// mountTmpfs mounts a tmpfs with options (size=...) on a new directory.
func mountTmpfs(t *testing.T, flags uintptr, options string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", flags, options); err != nil {
		t.Fatalf("mount tmpfs %s: %v", options, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// mountSmallExt2 mounts a 16 MiB ext2 with 1 KiB blocks, whose largest
// file is about 16 GiB: a bigger flat extent fails with EFBIG.
func mountSmallExt2(t *testing.T) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "ext2.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext2", "-q", "-F", "-b", "1024", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext2: %v %s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// failingDevice is a loop device whose sparse backing file lives on a
// 2 MiB tmpfs: writes are cached, and flushing more than 2 MiB fails with
// EIO, as a device whose storage went away does.
func failingDevice(t *testing.T) string {
	t.Helper()
	dir := mountTmpfs(t, 0, "size=2M")
	backing := filepath.Join(dir, "backing")
	if err := os.WriteFile(backing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, 32<<20); err != nil {
		t.Fatal(err)
	}
	return attachLoop(t, backing)
}

// fill writes n bytes of incompressible data into dir, so the volume holds
// the disk on paper but has no room left for it.
func fill(t *testing.T, dir string, n int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "filler"), bytes.Repeat([]byte{0x5a}, n), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sharedDir is a directory every user may read and write, for the runs as
// another user.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "imager-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// asNobody returns a command running the test binary as imager, as uid
// and gid 65534: root passes every permission check, so EACCES needs
// another user. The binary is copied where that user may run it.
func asNobody(t *testing.T, shared string, args ...string) *exec.Cmd {
	t.Helper()
	bin := filepath.Join(shared, "imager.test")
	if _, err := os.Stat(bin); err != nil {
		self, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, self, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "IMAGER_TEST_MAIN=1")
	cmd.Dir = shared
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
}

// exitRow is one row of the table: argv (the result file goes in front
// of the rest when withResult), how it runs, what it must end with.
type exitRow struct {
	name   string
	argv   func(t *testing.T) []string
	nobody bool   // run as uid 65534 in shared
	stdin  []byte // the source, for import -
	code   int
	reason string
}

// runRow runs argv, with the result file inserted after the command name
// when res is set, and returns the exit code and stderr.
func runRow(t *testing.T, row exitRow, argv []string, res, shared string) (int, string) {
	t.Helper()
	if res != "" {
		argv = append([]string{argv[0], "--result-file", res}, argv[1:]...)
	}
	if !row.nobody && row.stdin == nil {
		code, _, errs := imager(argv...)
		return code, errs
	}
	var cmd *exec.Cmd
	if row.nobody {
		cmd = asNobody(t, shared, argv...)
	} else {
		cmd = imagerCmd(argv...)
	}
	cmd.Stdin = bytes.NewReader(row.stdin)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), errb.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, errb.String()
}

func TestExitCodeTable(t *testing.T) {
	needRoot(t)
	f := getFixture(t)
	shared := sharedDir(t)
	// A 64 GiB sparse image: small to store, too big for a flat extent on
	// the small ext2.
	big := filepath.Join(t.TempDir(), "big.vmdk")
	if code, _, errs := imager("create", "-q", big, "64G"); code != 0 {
		t.Fatal(errs)
	}
	stream := filepath.Join(shared, "stream.vmdk")
	if err := os.WriteFile(stream, f.stream, 0o644); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(f.dir, "disk.raw") // 24 MiB, 5 MiB of it data
	rows := []exitRow{
		{name: "EFBIG create", code: 3, reason: jobapi.ReasonFileTooLarge, argv: func(t *testing.T) []string {
			return []string{"create", "-q", "-o", "subformat=monolithicFlat", filepath.Join(mountSmallExt2(t), "disk.vmdk"), "64G"}
		}},
		{name: "EFBIG convert", code: 3, reason: jobapi.ReasonFileTooLarge, argv: func(t *testing.T) []string {
			return []string{"convert", "-O", "vmdk", "-o", "subformat=monolithicFlat", big, filepath.Join(mountSmallExt2(t), "disk.vmdk")}
		}},
		{name: "EROFS create", code: 3, reason: jobapi.ReasonReadOnlyTarget, argv: func(t *testing.T) []string {
			return []string{"create", "-q", filepath.Join(mountTmpfs(t, syscall.MS_RDONLY, "size=64M"), "disk.vmdk"), "16M"}
		}},
		{name: "EROFS import", code: 3, reason: jobapi.ReasonReadOnlyTarget, argv: func(t *testing.T) []string {
			return []string{"import", "--target", mountTmpfs(t, syscall.MS_RDONLY, "size=64M"), stream}
		}},
		{name: "ENOSPC on a volume smaller than the disk: create", code: 3, reason: jobapi.ReasonTargetTooSmall, argv: func(t *testing.T) []string {
			// 500 extent files of about 8 KiB each on 1 MiB.
			return []string{"create", "-q", "-o", "subformat=twoGbMaxExtentSparse", filepath.Join(mountTmpfs(t, 0, "size=1M"), "disk.vmdk"), "1000G"}
		}},
		{name: "ENOSPC on a volume smaller than the disk: flatten", code: 3, reason: jobapi.ReasonTargetTooSmall, argv: func(t *testing.T) []string {
			return []string{"flatten", "-o", "subformat=monolithicFlat", raw, filepath.Join(mountTmpfs(t, 0, "size=1M"), "disk.vmdk")}
		}},
		{name: "ENOSPC on a volume big enough: convert", code: 1, reason: jobapi.ReasonNoSpace, argv: func(t *testing.T) []string {
			dir := mountTmpfs(t, 0, "size=32M")
			fill(t, dir, 30<<20)
			return []string{"convert", "-O", "vmdk", "-o", "subformat=monolithicFlat", raw, filepath.Join(dir, "disk.vmdk")}
		}},
		{name: "ENOSPC on a volume big enough: import of unknown size", code: 1, reason: jobapi.ReasonNoSpace, stdin: f.raw, argv: func(t *testing.T) []string {
			dir := mountTmpfs(t, 0, "size=32M")
			fill(t, dir, 30<<20)
			return []string{"import", "--target", dir, "-"}
		}},
		{name: "EACCES target: import", code: 3, reason: jobapi.ReasonTargetNotWritable, nobody: true, argv: func(t *testing.T) []string {
			dir := filepath.Join(shared, "root-owned")
			os.Mkdir(dir, 0o755)
			return []string{"import", "--target", dir, stream}
		}},
		{name: "EACCES target: create", code: 3, reason: jobapi.ReasonTargetNotWritable, nobody: true, argv: func(t *testing.T) []string {
			dir := filepath.Join(shared, "root-owned")
			os.Mkdir(dir, 0o755)
			return []string{"create", "-q", filepath.Join(dir, "disk.vmdk"), "16M"}
		}},
		{name: "EACCES source: import", code: 3, reason: jobapi.ReasonUnauthorized, nobody: true, argv: func(t *testing.T) []string {
			private := filepath.Join(shared, "private.vmdk")
			os.WriteFile(private, f.stream, 0o600)
			dir := filepath.Join(shared, "target")
			os.Mkdir(dir, 0o777)
			os.Chmod(dir, 0o777)
			return []string{"import", "--target", dir, private}
		}},
		{name: "EIO import", code: 1, reason: jobapi.ReasonIOError, argv: func(t *testing.T) []string {
			return []string{"import", "--target", failingDevice(t), stream}
		}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			res := filepath.Join(shared, "result.json")
			os.Remove(res)
			argv := row.argv(t)
			code, errs := runRow(t, row, argv, res, shared)
			b, err := os.ReadFile(res)
			if err != nil {
				t.Fatalf("exit %d, no result: %v; stderr %s", code, err, errs)
			}
			r, err := jobapi.Parse(string(b))
			if err != nil {
				t.Fatal(err)
			}
			wantFailed(t, code, r, row.code, row.reason)
			if strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.HasPrefix(errs, "imager "+argv[0]+": ") {
				t.Errorf("stderr is not one line about the failure: %q", errs)
			}
			// Without a result file the exit code follows the same table
			// (the row's conditions stand: a failure leaves nothing behind).
			if code, errs := runRow(t, row, argv, "", shared); code != row.code {
				t.Errorf("without --result-file: exit %d, want %d (%s)", code, row.code, errs)
			}
		})
	}
}

// TestConvertToFailingDevice: EIO on a device is transient for convert
// too, which has no result file for raw output.
func TestConvertToFailingDevice(t *testing.T) {
	needRoot(t)
	f := getFixture(t)
	code, _, errs := imager("convert", "-O", "raw", filepath.Join(f.dir, "disk.raw"), failingDevice(t))
	if code != jobapi.ExitTransient || !strings.Contains(errs, "input/output error") {
		t.Fatalf("exit %d %q", code, errs)
	}
}

// TestTargetPathErrors: errors about the target path the errno table does
// not name (ENOTDIR here) are permanent: the path stays wrong. Needs no
// root.
func TestTargetPathErrors(t *testing.T) {
	f := getFixture(t)
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	code, r, _, _ := runImportTest(t, "--target", filepath.Join(file, "sub"), filepath.Join(f.dir, "stream.vmdk"))
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonTargetError)
	code, _, errs := imager("create", "-q", filepath.Join(file, "disk.vmdk"), "1M")
	if code != jobapi.ExitPermanent {
		t.Fatalf("create under a file: exit %d %s", code, errs)
	}
}

// TestDamagedOVA: a tar header that fails its checksum is a damaged
// source (classify knows the tar errors), not a transient failure.
func TestDamagedOVA(t *testing.T) {
	f := getFixture(t)
	ova := makeOVA(t, f, true)
	ova[148] ^= 0x01 // the first header's checksum field
	src := filepath.Join(t.TempDir(), "bad.ova")
	os.WriteFile(src, ova, 0o644)
	code, r, _, _ := runImportTest(t, "--target", t.TempDir(), src)
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonInvalidImage)
}

// TestWriteReadOnlyExtent: writing into an image whose descriptor marks
// its extent RDONLY fails the same way every time.
func TestWriteReadOnlyExtent(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "ro.vmdk")
	if code, _, errs := imager("create", "-q", "-o", "subformat=monolithicFlat", img, "1M"); code != 0 {
		t.Fatal(errs)
	}
	desc, _ := os.ReadFile(img)
	os.WriteFile(img, bytes.Replace(desc, []byte("\nRW "), []byte("\nRDONLY "), 1), 0o644)
	res := filepath.Join(dir, "r.json")
	code, _, errs := imager("write", "--result-file", res, "0", "4k", img)
	b, _ := os.ReadFile(res)
	r, err := jobapi.Parse(string(b))
	if err != nil {
		t.Fatalf("exit %d %s: %v", code, errs, err)
	}
	wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonReadOnlyTarget)
}

// TestInfoRefusesDataElsewhere: a raw device mapping and a vSAN object
// (their data is in no file) are refused by info, which a Job runs before
// it writes anything, as UnsupportedImage with the way forward.
func TestInfoRefusesDataElsewhere(t *testing.T) {
	for _, c := range []struct{ createType, extent, file, phrase string }{
		{"vmfsRawDeviceMap", `RW 2048 VMFSRDM "d-rdm.vmdk"`, "d-rdm.vmdk", "the data is on the LUN, not in the file"},
		{"vmfs", `RW 2048 VMFS "vsan://52f3a1d0-6c2b-8e47-a9d3-0b5e7c14f268"`, "", "vSAN objects are not files"},
	} {
		dir := t.TempDir()
		img := filepath.Join(dir, "d.vmdk")
		desc := "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"" + c.createType + "\"\n\n" + c.extent + "\n"
		if err := os.WriteFile(img, []byte(desc), 0o644); err != nil {
			t.Fatal(err)
		}
		if c.file != "" {
			if err := os.WriteFile(filepath.Join(dir, c.file), make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		res := filepath.Join(dir, "r.json")
		code, _, errs := imager("info", "--result-file", res, img)
		b, _ := os.ReadFile(res)
		r, err := jobapi.Parse(string(b))
		if err != nil {
			t.Fatalf("exit %d %s: %v", code, errs, err)
		}
		wantFailed(t, code, r, jobapi.ExitPermanent, jobapi.ReasonUnsupportedImage)
		if !strings.Contains(errs, c.phrase) || !strings.Contains(r.Message, c.phrase) {
			t.Errorf("%s: stderr %q, message %q: want %q", c.createType, errs, r.Message, c.phrase)
		}
	}
}
