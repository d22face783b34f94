package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/internal/target"
)

const (
	chunkSize = 4 << 20 // bytes read per step: 64 grains to inflate in parallel
)

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runConvertCommand(ctx, "convert", args, stderr)
}

// runFlatten is convert with VMDK output by default: the chain's content
// goes into one self-contained image, holes kept.
func runFlatten(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runConvertCommand(ctx, "flatten", append([]string{"-O", "vmdk"}, args...), stderr)
}

// convertCommand is what convert's (or flatten's) command line asks for.
type convertCommand struct {
	src, dst             string
	srcFormat, dstFormat string
	opts                 vmdkOptions
	level                int
	progress             bool
	cache                string
	resultFile           string
	paths                pathFlags
}

// runConvertCommand runs convert or flatten (cmd: the name messages use).
func runConvertCommand(ctx context.Context, cmd string, args []string, stderr io.Writer) error {
	c, err := parseConvert(cmd, args)
	if err != nil {
		return err
	}
	err = convert(ctx, []string{c.src, c.dst}, c.srcFormat, c.dstFormat, c.opts, c.level, c.progress, c.cache, &c.paths, stderr)
	return withResult(cmd, c.resultFile, c.dst, &c.paths, err)
}

// parseConvert reads convert's command line; its errors are usage errors.
func parseConvert(cmd string, args []string) (*convertCommand, error) {
	c := &convertCommand{}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.StringVar(&c.srcFormat, "f", "", "source format: vmdk or raw (default: probe)")
	fs.StringVar(&c.dstFormat, "O", "raw", "output format: raw or vmdk")
	var options optionList
	fs.Var(&options, "o", "vmdk output options, repeatable: subformat=streamOptimized,adapter_type=...,hwversion=...,toolsversion=...")
	fs.IntVar(&c.level, "c", 0, "zlib level 1-9 for compressed (streamOptimized) output (default 6)")
	fs.BoolVar(&c.progress, "p", false, "show progress on stderr")
	fs.StringVar(&c.cache, "t", "writeback", "output cache mode: writeback (fsync when done) or unsafe (no fsync, like qemu-img convert's default)")
	resultFile := resultFlag(fs)
	c.paths.register(fs)
	pos, err := parseArgs(fs, args, 2)
	if err != nil {
		return nil, err
	}
	c.src, c.dst, c.resultFile = pos[0], pos[1], *resultFile
	if c.resultFile != "" && c.dstFormat != "vmdk" {
		return nil, usagef("--result-file describes VMDK output: use it with -O vmdk")
	}
	if c.opts, err = convertOptions(c.srcFormat, c.dstFormat, options, c.level, c.cache); err != nil {
		return nil, err
	}
	return c, nil
}

// convertOptions checks convert's flags; its errors are usage errors.
func convertOptions(srcFormat, dstFormat string, options optionList, level int, cache string) (vmdkOptions, error) {
	if err := checkFormat("-f", srcFormat); err != nil {
		return vmdkOptions{}, err
	}
	if cache != "writeback" && cache != "unsafe" {
		return vmdkOptions{}, usagef("-t %q: want writeback or unsafe", cache)
	}
	if level < 0 || level > 9 {
		return vmdkOptions{}, usagef("-c %d: want a zlib level from 1 to 9", level)
	}
	switch dstFormat {
	case "raw":
		if len(options) != 0 || level != 0 {
			return vmdkOptions{}, usagef("-o and -c apply to -O vmdk only")
		}
		return vmdkOptions{}, nil
	case "vmdk":
		return parseVMDKOptions(options)
	}
	return vmdkOptions{}, usagef("-O %q: want raw or vmdk", dstFormat)
}

func convert(ctx context.Context, pos []string, srcFormat, dstFormat string, opts vmdkOptions, level int, progress bool, cache string, pf *pathFlags, stderr io.Writer) error {
	src, err := openImage(pos[0], srcFormat, pf)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := checkNotSource(src, pos[1]); err != nil {
		return err
	}
	var report func(done int64)
	if progress {
		report = progressPrinter(stderr, src.Size())
	}
	if dstFormat == "vmdk" {
		err = convertToVMDK(ctx, src, pos[1], opts, level, cache == "writeback", report)
	} else {
		err = convertToRaw(ctx, src, pos[1], cache == "writeback", report)
	}
	if err != nil {
		err = fmt.Errorf("%s: %w", pos[1], err)
		if !isDevice(pos[1]) { // a device's size is checked before writing
			err = target.VolumeTooSmall(err, filepath.Dir(pos[1]), src.Size())
		}
	}
	return err
}

func convertToRaw(ctx context.Context, src image, path string, sync bool, report func(int64)) error {
	t, err := target.Open(path, src.Size(), target.Options{Format: target.Raw, Zero: target.ZeroProbe, Sync: sync})
	if err != nil {
		return err
	}
	return finish(t, copyImage(ctx, src, t, report), src.Size())
}

// chunk is a range of the source to copy: data to read, or a zero range.
type chunk struct {
	off, n int64
	zero   bool // nothing stored: write zeros only to a block device
}

// copyImage copies src's guest content to dst. Ranges the source maps as
// zero are skipped (or zeroed on a block device); data is read in chunks
// by several workers at once, so inflating, reading and writing overlap,
// and zero runs inside data become holes.
func copyImage(ctx context.Context, src image, dst target.Target, report func(int64)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := runtime.GOMAXPROCS(0)
	chunks := make(chan chunk, workers)
	var (
		wg       sync.WaitGroup
		reportMu sync.Mutex
		done     int64
	)
	for range workers {
		wg.Go(func() {
			buf := make([]byte, chunkSize)
			for c := range chunks {
				if ctx.Err() != nil {
					continue // drain after a failure
				}
				if err := safeCopyChunk(src, dst, c, buf); err != nil {
					cancel(err)
					continue
				}
				if report != nil {
					reportMu.Lock()
					done += c.n
					report(done)
					reportMu.Unlock()
				}
			}
		})
	}
	err := walkChunks(ctx, src, chunks)
	close(chunks)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	if err != nil {
		return err
	}
	if report != nil {
		report(-1)
	}
	return nil
}

// walkChunks sends src's content as chunks of at most chunkSize bytes,
// following its block status.
func walkChunks(ctx context.Context, src image, out chan<- chunk) error {
	size := src.Size()
	for off := int64(0); off < size; {
		m, err := src.status(off, size-off)
		if err != nil {
			return err
		}
		if m.NoAccess {
			return fmt.Errorf("byte %d is in a NOACCESS extent", off)
		}
		for end := off + m.Length; off < end; {
			n := min(chunkSize, end-off)
			select {
			case out <- chunk{off: off, n: n, zero: !m.Data}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			off += n
		}
	}
	return nil
}

var zeroChunk = make([]byte, chunkSize)

// safeCopyChunk is copyChunk with a panic turned into an error: the
// workers run where main's recover cannot see.
func safeCopyChunk(src image, dst target.Target, c chunk, buf []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v", r)
		}
	}()
	return copyChunk(src, dst, c, buf)
}

func copyChunk(src image, dst target.Target, c chunk, buf []byte) error {
	if c.zero {
		return dst.Zero(c.off, c.n) // a hole where the destination was created empty
	}
	buf = buf[:c.n]
	if _, err := src.ReadAt(buf, c.off); err != nil && err != io.EOF {
		return err
	}
	return writeSparse(dst, buf, c.off)
}

// writeSparse writes buf at off as alternating runs: data runs are
// written, runs of aligned all-zero blocks of dst.HoleUnit bytes are left
// as holes (dst.Zero).
func writeSparse(dst target.Target, buf []byte, off int64) error {
	unit := dst.HoleUnit()
	flush := func(from, to int, zero bool) error {
		if from == to {
			return nil
		}
		if !zero {
			_, err := dst.WriteAt(buf[from:to], off+int64(from))
			return err
		}
		return dst.Zero(off+int64(from), int64(to-from))
	}
	start, zeroRun := 0, false
	for i := 0; i < len(buf); {
		end := min(int((off+int64(i))/int64(unit)+1)*unit-int(off), len(buf)) // next unit boundary
		z := bytes.Equal(buf[i:end], zeroChunk[:end-i])
		if i > start && z != zeroRun {
			if err := flush(start, i, zeroRun); err != nil {
				return err
			}
			start = i
		}
		zeroRun = z
		i = end
	}
	return flush(start, len(buf), zeroRun)
}

// progressPrinter returns a reporter that redraws "(xx.xx/100%)" on w at
// most every 100 ms; done < 0 finishes the line.
func progressPrinter(w io.Writer, total int64) func(int64) {
	var last time.Time
	return func(done int64) {
		if done < 0 {
			fmt.Fprintf(w, "    (100.00/100%%)\n")
			return
		}
		if time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		fmt.Fprintf(w, "    (%.2f/100%%)\r", pct)
	}
}

// finish completes t after a copy that returned err, to a disk of size
// bytes, or drops it.
func finish(t target.Target, err error, size int64) error {
	if err != nil {
		t.Abort()
		return err
	}
	return t.Finish(size)
}
