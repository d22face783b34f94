package main

import (
	"encoding/hex"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// The controllers build imager's command lines with jobapi's
// builders: each is parsed here by the command's own flag parsing, so a
// renamed flag or a field the builder drops fails here, not in a Job.

var contractOptions = jobapi.VMDKOptions{Subformat: "streamOptimized", AdapterType: "lsilogic", HWVersion: 7}

func wantOptions(t *testing.T, got vmdkOptions) {
	t.Helper()
	if got.subformat != vmdk.StreamOptimized || got.image.AdapterType != "lsilogic" || got.image.HWVersion != "7" {
		t.Fatalf("-o arrived as %+v", got)
	}
}

func TestCreateArgsParse(t *testing.T) {
	for _, in := range []jobapi.CreateArgs{
		{Quiet: true, ResultFile: jobapi.ResultPath, Root: "/images", Options: jobapi.VMDKOptions{Subformat: "monolithicSparse", AdapterType: "lsilogic", HWVersion: 7},
			Backing: "/images/parent/disk.vmdk", Image: "/images/child/disk.vmdk", Size: 1 << 30},
		{Image: "/images/blank/disk.vmdk", Size: 512, Options: contractOptions},
	} {
		argv := in.Argv()
		if argv[0] != "create" {
			t.Fatalf("%q", argv)
		}
		c, err := parseCreate(argv[1:])
		if err != nil {
			t.Fatalf("%q: %v", argv, err)
		}
		hw, _ := strconv.Atoi(c.opts.image.HWVersion)
		got := jobapi.CreateArgs{Quiet: c.quiet, ResultFile: c.resultFile, Root: c.paths.root, Backing: c.backing, Image: c.path, Size: c.size,
			Options: jobapi.VMDKOptions{Subformat: string(c.opts.subformat), AdapterType: c.opts.image.AdapterType, HWVersion: hw}}
		if got != in {
			t.Fatalf("%q arrived as %+v, want %+v", argv, got, in)
		}
	}
}

func TestConvertArgsParse(t *testing.T) {
	in := jobapi.ConvertArgs{TargetFormat: "vmdk", Options: contractOptions, ResultFile: jobapi.ResultPath, Root: "/images",
		Source: "/images/c/disk.vmdk", Target: "/images/flat/disk.vmdk"}
	argv := in.Argv()
	if argv[0] != "convert" {
		t.Fatalf("%q", argv)
	}
	c, err := parseConvert("convert", argv[1:])
	if err != nil {
		t.Fatalf("%q: %v", argv, err)
	}
	wantOptions(t, c.opts)
	got := jobapi.ConvertArgs{TargetFormat: c.dstFormat, Options: contractOptions, ResultFile: c.resultFile, Root: c.paths.root, Source: c.src, Target: c.dst}
	if got != in {
		t.Fatalf("%q arrived as %+v, want %+v", argv, got, in)
	}
}

func TestInfoArgsParse(t *testing.T) {
	in := jobapi.InfoArgs{ResultFile: jobapi.ResultPath, Root: "/images", Image: "/images/base/disk.vmdk"}
	argv := in.Argv()
	c, err := parseInfo(argv[1:])
	if argv[0] != "info" || err != nil {
		t.Fatalf("%q: %v", argv, err)
	}
	if got := (jobapi.InfoArgs{ResultFile: c.resultFile, Root: c.paths.root, Image: c.path}); got != in {
		t.Fatalf("%q arrived as %+v, want %+v", argv, got, in)
	}
}

func TestImportArgsParse(t *testing.T) {
	sum := "sha256:" + strings.Repeat("ab", 32)
	for _, in := range []jobapi.ImportArgs{
		// An image from HTTP, every flag set.
		{ResultFile: jobapi.ResultPath, Target: "/images/web", TargetFormat: "vmdk", Options: contractOptions, Size: 2 << 30, MaxSize: 4 << 30,
			MinThroughput: 1 << 20, ThroughputWindow: 90 * time.Second, Deadline: 6 * time.Hour,
			ScratchDir: "/scratch", CAFile: "/etc/vmdkpop/ca/ca.crt", CredentialsDir: "/etc/vmdkpop/credentials",
			InsecureAllowCredentialsOverHTTP: true, Checksum: sum, OVADisk: "1", HTTPConnections: 8, Source: "https://disks.example/vm.ova"},
		// A populator's raw copy of an image.
		{ResultFile: jobapi.ResultPath, Target: "/target", TargetFormat: "raw", FSOverhead: 0.07, Root: "/images", Source: "/images/c/disk.vmdk"},
	} {
		argv := in.Argv()
		if argv[0] != "import" {
			t.Fatalf("%q", argv)
		}
		j, cmd, err := parseImport(argv[1:], io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", argv, err)
		}
		got := jobapi.ImportArgs{ResultFile: cmd.resultFile, Target: j.target, TargetFormat: j.targetFormat, Size: j.size, MaxSize: j.maxSize,
			ScratchDir: j.scratch, CAFile: j.http.CAFile, CredentialsDir: j.http.CredsDir, InsecureAllowCredentialsOverHTTP: j.http.InsecureCreds,
			OVADisk: j.ovaDisk, Root: j.paths.root, Source: j.source}
		if j.http.Connections != defaultHTTPConnections {
			got.HTTPConnections = int64(j.http.Connections)
		}
		if j.overhead != jobapi.FSOverhead {
			got.FSOverhead = j.overhead
		}
		if j.http.Pace.Min != defaultMinThroughput {
			got.MinThroughput = j.http.Pace.Min
		}
		if j.http.Pace.Window != time.Minute {
			got.ThroughputWindow = j.http.Pace.Window
		}
		got.Deadline = j.deadline
		if j.wantSum != nil {
			got.Checksum = "sha256:" + hex.EncodeToString(j.wantSum)
		}
		if in.Options != (jobapi.VMDKOptions{}) {
			wantOptions(t, j.vmdkOpts)
			got.Options = in.Options
		}
		if got != in {
			t.Fatalf("%q arrived as\n%+v, want\n%+v", argv, got, in)
		}
	}
}
