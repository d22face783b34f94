package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// ovaAll is the --ova-disk that imports every disk of an OVA.
const ovaAll = jobapi.OVADiskAll

// maxAllDisks bounds the disks --ova-disk all writes (a directory and a
// target each): vSphere gives a VM at most 256 virtual disks.
const maxAllDisks = 256

// fromOVA imports the disk --ova-disk names out of an OVA, or with
// --ova-disk all each of its disks into its own directory, reading the
// tar once. Its manifest, when it has one, verifies the descriptor and
// every member imported before the import can succeed.
func (j *importJob) fromOVA(br *bufio.Reader) error {
	ova, err := source.OpenOVA(j.ctx, br)
	if err != nil {
		return err
	}
	j.ova = ova
	if j.ovaDisk == ovaAll {
		return j.allFromOVA(ova)
	}
	disk, err := ova.Pick(j.ovaDisk)
	if err != nil {
		return err
	}
	if disk.Of > 1 {
		fmt.Fprintf(j.log, "imager: importing OVA disk %s of %d\n", disk.Description, disk.Of)
	}
	r, n, err := openOVADisk(ova, disk)
	if err != nil {
		return err
	}
	if err := j.fromOVADisk(disk, r, n); err != nil {
		return err
	}
	return ova.Finish()
}

// allNeedsOVA refuses --ova-disk all for a source that is no OVA: it
// would write one disk where each of an OVA's was asked for.
func (j *importJob) allNeedsOVA(kind source.Kind, outer bool) error {
	if j.ovaDisk != ovaAll || !outer || kind == source.KindOVA {
		return nil
	}
	return failed(errBadRequest, fmt.Errorf("--ova-disk all: %s is not an OVA", jobapi.RedactURL(j.source)))
}

func openOVADisk(ova *source.OVA, disk *source.OVADisk) (io.Reader, int64, error) {
	_, r, n, err := ova.Next(disk)
	return r, n, err
}

// fromOVADisk imports one disk's file as it comes out of the tar.
func (j *importJob) fromOVADisk(disk *source.OVADisk, r io.Reader, n int64) error {
	if disk.Gzip {
		zr, err := source.Decompress(source.KindGzip, r)
		if err != nil {
			return fmt.Errorf("OVA disk %s: %w", disk.Href, err)
		}
		defer zr.Close()
		r, n = zr, -1
	}
	if err := j.fromReader(bufio.NewReaderSize(r, source.HeadBytes), n, nil, false); err != nil {
		return err
	}
	// A raw disk's file is the disk: its length is the disk's capacity.
	// (A VMDK says its own capacity, which its reader checks the data
	// against.)
	if j.res.SourceFormat == "raw" {
		return disk.CheckRaw(j.rawRead)
	}
	return nil
}

// allFromOVA writes every disk of the OVA, in member order, each into a
// directory of --target named from the OVF. Each disk's target is left
// unfinished until the whole archive (a manifest after the disks, the
// source's --checksum) is verified: runSafe finishes them all or none.
func (j *importJob) allFromOVA(ova *source.OVA) error {
	if err := ova.CheckAll(); err != nil {
		return err
	}
	if n := len(ova.Disks); n > maxAllDisks {
		return failed(errBadRequest, fmt.Errorf("--ova-disk all: the OVF lists %d disks, more than the %d a VM has at most: import them one by one (--ova-disk INDEX)", n, maxAllDisks))
	}
	names, err := ovaDiskDirs(ova.Disks)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(j.target); err != nil {
		return target.MarkOpen(fmt.Errorf("target: %w", err))
	} else if !fi.IsDir() {
		return failed(errBadRequest, fmt.Errorf("--ova-disk all: target %s is not a directory (each disk goes into a directory of it)", j.target))
	}
	fmt.Fprintf(j.log, "imager: importing the %d disks of the OVA into %s\n", len(ova.Disks), j.target)
	for {
		disk, r, n, err := ova.Next(nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		dir := filepath.Join(j.target, names[disk])
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return target.MarkOpen(fmt.Errorf("target: %w", err))
		}
		fmt.Fprintf(j.log, "imager: OVA disk %s into %s\n", disk.Description, dir)
		sub := j.diskJob(dir, names[disk], disk)
		j.disks = append(j.disks, sub)
		err = sub.fromOVADisk(disk, r, n)
		// The disk is written: its spooled file goes now, so scratch
		// holds the largest disk's, not every disk's together.
		for _, p := range sub.spools {
			os.Remove(p)
		}
		j.res.Spooled = j.res.Spooled || sub.res.Spooled
		if err != nil {
			return fmt.Errorf("OVA disk %s: %w", disk.Description, err)
		}
	}
	return ova.Finish()
}

// diskJob is the import of one disk of an OVA into dir: the job's flags,
// its own target and result; the source's checksum stays the job's.
func (j *importJob) diskJob(dir, name string, disk *source.OVADisk) *importJob {
	sub := &importJob{ctx: j.ctx, source: j.source, sourceFormat: "auto", target: dir, targetFormat: j.targetFormat,
		targetName: j.targetName, targetMode: "filesystem", zero: j.zero, overhead: j.overhead, vmdkOpts: j.vmdkOpts,
		level: j.level, scratch: j.scratch, sync: j.sync, http: j.http, paths: j.paths, size: j.size, maxSize: j.maxSize,
		log: j.log, prog: j.prog, diskName: name, ovaFile: disk}
	return sub
}

// ovaDiskDirs names each disk's directory: its file's base name, made
// safe for a file system (letters, digits, '.', '-', '_'), or its
// diskId, or disk<index>. Two disks named alike (ignoring case, as some
// file systems do) are refused before anything is written.
func ovaDiskDirs(disks []*source.OVADisk) (map[*source.OVADisk]string, error) {
	names := map[*source.OVADisk]string{}
	seen := map[string]*source.OVADisk{}
	for _, d := range disks {
		name := safeName(filepath.Base(d.Href))
		if name == "" {
			name = safeName(d.DiskID)
		}
		if name == "" {
			name = fmt.Sprintf("disk%d", d.Index)
		}
		if other, dup := seen[strings.ToLower(name)]; dup {
			return nil, failed(errBadRequest, fmt.Errorf("--ova-disk all: disks %s and %s would both be written to the directory %q", other.Description, d.Description, name))
		}
		seen[strings.ToLower(name)] = d
		names[d] = name
	}
	return names, nil
}

// safeName keeps a name's letters, digits, '.', '-' and '_' (others
// become '_'), at most 64 bytes; "", "." and ".." are no name.
func safeName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	if n := strings.Trim(string(b), "._"); n == "" {
		return ""
	}
	return string(b)
}

// finishDisks completes the targets of --ova-disk all after an import
// that returned err: all of them, or, on failure, none (those already
// finished are removed again).
func (j *importJob) finishDisks(err error) error {
	var done []*importJob
	for _, d := range j.disks {
		if d.out == nil {
			continue
		}
		err = d.finishTarget(err)
		err = target.VolumeTooSmall(err, filepath.Dir(d.outPath), d.outSize)
		if err == nil {
			done = append(done, d)
		}
	}
	if err != nil {
		for _, d := range done {
			os.Remove(d.outPath)
		}
		for _, d := range j.disks {
			os.Remove(d.target) // only if empty: a directory this import made
		}
	}
	return err
}

// describeDisks lists the disks written in the result.
func (j *importJob) describeDisks() {
	for _, d := range j.disks {
		d.out.Describe(&d.res)
		sum := ""
		if d.ovaFile != nil {
			sum = d.ovaFile.SHA256
		}
		j.res.Disks = append(j.res.Disks, jobapi.DiskResult{Name: d.diskName, VirtualSize: d.res.VirtualSize,
			AllocatedBytes: d.res.AllocatedBytes, SHA256: sum})
		j.res.AllocatedBytes += d.res.AllocatedBytes
	}
}
