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
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// Inputs that are not files: a FIFO as the image, as an extent of it or as
// its parent, and a character device as a raw image. Opening a FIFO for
// reading blocks until a writer comes, so every command must refuse these
// without opening them blocking: promptly, with one clear stderr line and
// its exit code and reason.

// fifoImages makes, in dir, the three ways an image can lead to a FIFO and
// returns their paths by name.
func fifoImages(t *testing.T, dir string) map[string]string {
	t.Helper()
	for _, f := range []string{"fifo.vmdk", "fifo.raw", "fifo-base.vmdk"} {
		if err := syscall.Mkfifo(filepath.Join(dir, f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const head = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("zero.raw", strings.Repeat("\x00", 1<<20))
	write("extent.vmdk", head+`RW 2048 FLAT "fifo.raw" 0`+"\n")
	write("child.vmdk", strings.Replace(head, "parentCID=ffffffff", "parentCID=87654321", 1)+
		`parentFileNameHint="fifo-base.vmdk"`+"\n"+`RW 2048 FLAT "zero.raw" 0`+"\n")
	return map[string]string{
		"image":  filepath.Join(dir, "fifo.vmdk"),
		"extent": filepath.Join(dir, "extent.vmdk"),
		"parent": filepath.Join(dir, "child.vmdk"),
	}
}

// notAFile is the stderr line of every refusal here.
const notAFile = "not a regular file or block device"

func TestHostileFiles(t *testing.T) {
	dir := t.TempDir()
	images := fifoImages(t, dir)
	images["character device"] = "/dev/zero"
	other := filepath.Join(dir, "zero.raw")
	b := bound{Time: time.Second, Mem: 22 << 20}

	for what, img := range images {
		unsafe := []string{}
		if what == "character device" {
			unsafe = []string{"-f", "raw"}
		}
		t.Run(what, func(t *testing.T) {
			t.Run("convert", func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out.raw")
				run := runBounded(t, b, nil, append(append([]string{"convert"}, unsafe...), "-O", "raw", img, out)...)
				wantRefused(t, run, jobapi.ExitPermanent)
				if _, err := os.Stat(out); err == nil {
					t.Error("convert left an output behind")
				}
			})
			t.Run("checksum", func(t *testing.T) {
				res := filepath.Join(t.TempDir(), "r.json")
				run := runBounded(t, b, nil, append(append([]string{"checksum", "--result-file", res}, unsafe...), img)...)
				wantRefused(t, run, jobapi.ExitPermanent)
				wantReason(t, res, jobapi.ReasonUnsupportedImage)
			})
			t.Run("compare", func(t *testing.T) {
				fa := []string{}
				if len(unsafe) > 0 {
					fa = []string{"-f", "raw", "-F", "raw"}
				}
				run := runBounded(t, b, nil, append(append([]string{"compare"}, fa...), img, other)...)
				wantRefused(t, run, 2) // compare's own code for "could not compare"
			})
			t.Run("import", func(t *testing.T) {
				res := filepath.Join(t.TempDir(), "r.json")
				target := t.TempDir()
				run := runBounded(t, b, nil, "import", "--result-file", res, "--retries", "0", "--progress-interval", "0", "--target", target, img)
				wantRefused(t, run, jobapi.ExitPermanent)
				wantReason(t, res, jobapi.ReasonUnsupportedImage)
				if entries, _ := os.ReadDir(target); len(entries) != 0 {
					t.Errorf("import left %v in the target", entries)
				}
			})
		})
	}
}

// wantRefused checks a run refused a non-file with code and one stderr
// line saying so.
func wantRefused(t *testing.T, run boundedRun, code int) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(run.Stderr), "\n")
	if run.Code != code || len(lines) != 1 || !strings.Contains(lines[0], notAFile) {
		t.Fatalf("exit %d, stderr %q; want exit %d and one line saying %q", run.Code, run.Stderr, code, notAFile)
	}
}

func wantReason(t *testing.T, path, reason string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no result: %v", err)
	}
	r, err := jobapi.Parse(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	if r.Reason != reason {
		t.Fatalf("reason %s (%s), want %s", r.Reason, r.Message, reason)
	}
}

// SIGTERM while a command opens a FIFO: it has either refused it already
// or stops within a second (a blocking open(2) would hold it until the
// termination grace ran out).
func TestHostileFilesSIGTERM(t *testing.T) {
	dir := t.TempDir()
	images := fifoImages(t, dir)
	for what, argv := range map[string][]string{
		"convert image":   {"convert", "-O", "raw", images["image"], filepath.Join(dir, "out.raw")},
		"checksum extent": {"checksum", images["extent"]},
		"compare parent":  {"compare", images["parent"], images["parent"]},
		"import image":    {"import", "--retries", "0", "--progress-interval", "0", "--target", t.TempDir(), images["image"]},
	} {
		t.Run(what, func(t *testing.T) {
			cmd := imagerCmd(argv...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			time.Sleep(300 * time.Millisecond) // past start-up: in (or past) the open
			start := time.Now()
			cmd.Process.Signal(syscall.SIGTERM)
			var err error
			select {
			case err = <-done:
			case <-time.After(time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("still running 1 s after SIGTERM")
			}
			var ee *exec.ExitError
			code := 0
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			refused := jobapi.ExitPermanent
			if what == "compare parent" {
				refused = 2
			}
			if code != refused && code != jobapi.ExitTerminated {
				t.Fatalf("exit %d (%v), want %d (refused) or %d (terminated)", code, err, refused, jobapi.ExitTerminated)
			}
			reportBound(t.Name(), time.Since(start), 0)
		})
	}
}

// lineStream is a 4 MiB streamOptimized image (0xcd in its last MiB) whose
// embedded descriptor's line is rewritten to line (same length as "RW
// 8192 SPARSE").
func lineStream(t *testing.T, line string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := vmdk.NewStreamWriter(&buf, vmdk.StreamOptions{ImageOptions: vmdk.ImageOptions{Size: 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(bytes.Repeat([]byte{0xcd}, 1<<20), 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	img := buf.Bytes()
	h, err := vmdk.ParseSparseHeader(img)
	if err != nil {
		t.Fatal(err)
	}
	at := int(h.DescriptorOffset) * vmdk.SectorSize
	desc := img[at : at+int(h.DescriptorSize)*vmdk.SectorSize]
	i := bytes.Index(desc, []byte("RW 8192 SPARSE"))
	if i < 0 || len(line) != len("RW 8192 SPARSE") {
		t.Fatal("no extent line to rewrite")
	}
	copy(desc[i:], line)
	return img
}

// A stream's descriptor line that disagrees with its header's capacity is
// imported the same from a file and from stdin: refused when the line
// claims more than the extent holds, read as the line says when it
// claims less (and check reports what the line hides).
func TestHostileFilesExtentLines(t *testing.T) {
	b := bound{Time: 2 * time.Second, Mem: 22 << 20}
	for _, c := range []struct {
		name, line string
		code       int
		reason     string
		want       []byte
	}{
		{"line larger than the capacity", "RW 8200 SPARSE", jobapi.ExitPermanent, jobapi.ReasonInvalidImage, nil},
		{"line smaller than the capacity", "RW 4096 SPARSE", 0, jobapi.ReasonSucceeded, make([]byte, 2<<20)},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := lineStream(t, c.line)
			path := filepath.Join(t.TempDir(), "s.vmdk")
			if err := os.WriteFile(path, img, 0o644); err != nil {
				t.Fatal(err)
			}
			run, r, dir := importResult(t, b, nil, path)
			wantOutcome(t, run, r, dir, c.code, c.reason, c.want)
			run, r, dir = importResult(t, b, bytes.NewReader(img), "-")
			wantOutcome(t, run, r, dir, c.code, c.reason, c.want)
			check := runBounded(t, b, nil, "check", path)
			if check.Code != 2 { // corruptions
				t.Fatalf("check: exit %d, want 2; %s%s", check.Code, check.Stdout, check.Stderr)
			}
		})
	}
}

// A FIFO where a block device should be (a broken or hostile mount as the
// import target) is refused at once instead of blocking open(2), both
// where the space limit is measured and where the device is opened.
func TestHostileFilesFIFOTarget(t *testing.T) {
	f := getFixture(t)
	src := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(src, f.raw, 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(t.TempDir(), "dev")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, stdin := range map[string]bool{"known size": false, "unknown size (stdin)": true} {
		t.Run(name, func(t *testing.T) {
			res := filepath.Join(t.TempDir(), "r.json")
			args := []string{"import", "--result-file", res, "--retries", "0", "--progress-interval", "0", "--target-mode", "block", "--target", fifo, src}
			var in io.Reader
			if stdin {
				args[len(args)-1], in = "-", bytes.NewReader(f.raw)
			}
			run := runBounded(t, bound{Time: 3 * time.Second, Mem: 22 << 20}, in, args...)
			if run.Elapsed > time.Second {
				t.Errorf("took %v to refuse", run.Elapsed)
			}
			wantRefused(t, run, jobapi.ExitPermanent)
			wantReason(t, res, jobapi.ReasonTargetError)
		})
	}
}
