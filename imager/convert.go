package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	imgcopy "github.com/vmdkpop/vmdkpop/imager/internal/copy"
	"github.com/vmdkpop/vmdkpop/imager/internal/target"
)

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runConvertCommand(ctx, "convert", args, stderr)
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
	c.paths.start(ctx, stderr)
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
	c.paths.registerRemote(fs)
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
	if !isURL(pos[0]) { // a URL's files are not here
		if err := checkNotSource(src, pos[1]); err != nil {
			return err
		}
	}
	var report func(done int64)
	if progress {
		report = imgcopy.Printer(stderr, src.Size())
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
	return finish(t, imgcopy.Image(ctx, src, t, report), src.Size())
}

// convertToVMDK writes src as a VMDK.
func convertToVMDK(ctx context.Context, src image, path string, o vmdkOptions, level int, sync bool, report func(int64)) error {
	t, err := target.Open(path, src.Size(), target.Options{Format: target.VMDK, VMDK: o.create(src.Size(), "", nil), Level: level, Sync: sync})
	if err != nil {
		return err
	}
	if t.Ordered() {
		err = imgcopy.InOrder(ctx, src, t, report)
	} else {
		err = imgcopy.Image(ctx, src, t, report)
	}
	return finish(t, err, src.Size())
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
