package vmdk

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash test kills a writer process at random points, many times, and
// checks that every image left behind opens, has no corruption (leaks are
// allowed), and holds everything the writer saw Flush acknowledge.

const (
	crashSlot    = 256 << 10 // each write gets its own slot
	crashPerRun  = 64        // slots per run
	crashRuns    = 25
	crashBase    = 0x5a // the parent's content
	crashImgSize = crashRuns * crashPerRun * crashSlot
)

// crashWrite is the deterministic write number i of run r: offset, length
// and pattern byte inside slot r*crashPerRun+i.
func crashWrite(r, i int) (off, n int64, pattern byte) {
	rnd := rand.New(rand.NewSource(int64(r*1000 + i)))
	slot := int64(r*crashPerRun + i)
	off = slot*crashSlot + rnd.Int63n(64<<10)
	n = 1 + rnd.Int63n(crashSlot-(off-slot*crashSlot))
	return off, n, byte(1 + (r*crashPerRun+i)%250)
}

// TestCrashChild is the writer; it does nothing unless run by TestCrash.
func TestCrashChild(t *testing.T) {
	spec := os.Getenv("VMDKPOP_CRASH_CHILD")
	if spec == "" {
		return
	}
	path, runStr, _ := strings.Cut(spec, "|")
	r, _ := strconv.Atoi(runStr)
	d, err := Open(path, Options{ReadWrite: true})
	if err != nil {
		fmt.Println("open error:", err)
		os.Exit(1)
	}
	for i := range crashPerRun {
		off, n, p := crashWrite(r, i)
		if _, err := d.WriteAt(bytes.Repeat([]byte{p}, int(n)), off); err != nil {
			fmt.Println("write error:", err)
			os.Exit(1)
		}
		if i%3 == 2 {
			if err := d.Flush(); err != nil {
				fmt.Println("flush error:", err)
				os.Exit(1)
			}
			fmt.Println("acked", i) // everything up to i is durable
		}
	}
	d.Flush()
	fmt.Println("acked", crashPerRun-1)
	os.Exit(0)
}

func TestCrash(t *testing.T) {
	dir := t.TempDir()
	base, top := filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "top.vmdk")
	if err := Create(base, CreateOptions{Subformat: MonolithicFlat, ImageOptions: ImageOptions{Size: crashImgSize}}); err != nil {
		t.Fatal(err)
	}
	b := mustOpen(t, base, Options{ReadWrite: true})
	if _, err := b.WriteAt(bytes.Repeat([]byte{crashBase}, crashImgSize), 0); err != nil {
		t.Fatal(err)
	}
	b.Flush()
	b.Close()
	if err := Create(top, CreateOptions{Backing: base, ZeroedGrains: true}); err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	acked := make([]int, crashRuns) // per run: last acknowledged write, -1 if none
	for r := range crashRuns {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("VMDKPOP_CRASH_CHILD=%s|%d", top, r))
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 100)
		go func() {
			s := bufio.NewScanner(out)
			for s.Scan() {
				lines <- s.Text()
			}
			close(lines)
		}()
		time.Sleep(time.Duration(rnd.Intn(60)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		acked[r] = -1
		for l := range lines {
			if strings.HasPrefix(l, "acked ") {
				acked[r], _ = strconv.Atoi(strings.TrimPrefix(l, "acked "))
			} else if strings.Contains(l, "error") {
				t.Fatalf("run %d: %s", r, l)
			}
		}
		// Whatever the kill left opens and has no corruption.
		rep, err := Check(context.Background(), top, CheckOptions{})
		if err != nil || len(rep.Corruptions) != 0 {
			t.Fatalf("run %d (acked %d): check: %v %+v", r, acked[r], err, rep)
		}
	}
	d := mustOpen(t, top, Options{})
	content := readAll(t, d)
	ackedWrites := 0
	for r := range crashRuns {
		for i := range crashPerRun {
			off, n, p := crashWrite(r, i)
			start := int64(r*crashPerRun+i) * crashSlot
			for _, c := range [][]byte{content[start:off], content[off+n : start+crashSlot]} {
				if !bytes.Equal(c, bytes.Repeat([]byte{crashBase}, len(c))) {
					t.Fatalf("run %d write %d: bytes around the write changed", r, i)
				}
			}
			slot := content[off : off+n]
			if i <= acked[r] {
				ackedWrites++
				if !bytes.Equal(slot, bytes.Repeat([]byte{p}, int(n))) {
					t.Fatalf("run %d write %d was acknowledged but is lost", r, i)
				}
				continue
			}
			for k, c := range slot { // unacknowledged: old or new bytes, never garbage
				if c != p && c != crashBase {
					t.Fatalf("run %d write %d: byte %d is %#x, neither old nor new", r, i, k, c)
				}
			}
		}
	}
	t.Logf("%d runs killed, %d acknowledged writes verified", crashRuns, ackedWrites)
	if ackedWrites == 0 {
		t.Fatal("no write was ever acknowledged: the kills came too early to test anything")
	}
}
