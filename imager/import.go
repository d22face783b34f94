package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	imgcopy "github.com/vmdkpop/vmdkpop/imager/internal/copy"
	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// importJob is one run of `imager import`: a source read once, a target
// written once, a result at the end.
type importJob struct {
	ctx          context.Context
	source       string
	sourceFormat string
	ovaDisk      string
	target       string
	targetFormat string
	targetName   string
	targetMode   string
	zero         target.ZeroMode
	overhead     float64
	vmdkOpts     vmdkOptions
	level        int
	scratch      string
	sync         bool
	http         source.HTTPOptions
	vsphere      *jobapi.VSphereArgs // the source, when --vsphere-url is given
	backing      string              // -b: a delta import's parent (--vsphere-delta-from)
	paths        pathFlags
	size         int64         // --size: the target's virtual size (0: the source's)
	maxSize      int64         // --max-size: the largest virtual size allowed (0: the target's)
	deadline     time.Duration // --deadline: the most the import may take (0: no limit)

	log     io.Writer // one line per notable event
	wantSum []byte    // --checksum
	hash    hash.Hash // sha256 of the source bytes, when wanted
	prog    *imgcopy.Progress
	res     jobapi.Result
	// out is the target once opened, at outPath (a device: outBlock);
	// outSize is the disk's virtual size it is finished to.
	out      target.Target
	outPath  string
	outSize  int64
	outBlock bool
	// rawRead is how many bytes a raw source held, once read in order.
	rawRead int64
	spools  []string
	// outer is the sequential source itself (stdin, an http(s) reply,
	// read through the hash), not what was found inside it.
	outer *bufio.Reader
	// ova is the OVA being read, once found; with --ova-disk all, disks
	// are the imports of its disks (each with its own target, named
	// diskName, of the file ovaFile), finished together at the end.
	ova      *source.OVA
	disks    []*importJob
	diskName string
	ovaFile  *source.OVADisk
}

// stopGrace is how long a stopped import (a signal, --deadline) waits for
// its copy to clean up before it writes its result and exits: the process
// is gone within a second of SIGTERM, whatever the copy was doing.
const stopGrace = 700 * time.Millisecond

// importCommand is what import's command line asks for, beyond the job
// itself.
type importCommand struct {
	resultFile string
	interval   time.Duration
	human      bool
}

func runImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	j, cmd, err := parseImport(args, stderr)
	if err != nil {
		return err // run writes the result
	}
	resPath := cmd.resultFile
	if resPath == "" {
		if _, serr := os.Stat(jobapi.ResultPath); serr == nil {
			resPath = jobapi.ResultPath
		}
	}

	// The copy's own context carries errTerminated (or the deadline's
	// error) as its cause, so what it was doing when stopped reads
	// "terminated by a signal".
	jobCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	j.ctx = jobCtx
	var deadline <-chan time.Time
	if j.deadline > 0 {
		timer := time.NewTimer(j.deadline)
		defer timer.Stop()
		deadline = timer.C
	}
	j.prog = imgcopy.NewProgress(stdout, stderr, cmd.interval, cmd.human)
	done := make(chan error, 1)
	go func() { done <- j.runSafe() }()
	abandoned := false
	stop := func(why error) error {
		cancel(why)
		// Give the copy a moment to stop and remove its temporary. One
		// blocked in the kernel (a write, an fsync) is left to it: the
		// result is written and the process exits now, and the next
		// attempt removes the temporary (target.Open).
		select {
		case <-done:
		case <-time.After(stopGrace):
			abandoned = true
		}
		return why
	}
	select {
	case err = <-done:
	case <-ctx.Done():
		err = stop(errTerminated)
	case <-deadline:
		err = stop(failed(errDeadline, fmt.Errorf("the import did not finish within --deadline %v", j.deadline)))
	}
	j.prog.Stop(err == nil)
	var code int
	if abandoned {
		// The job still runs and owns j: the result says only how it
		// ended.
		j = &importJob{source: j.source}
		code = settle(&j.res, err, "")
	} else {
		code = j.finishResult(err)
	}
	if werr := writeResult(resPath, &j.res); werr != nil {
		fmt.Fprintf(stderr, "imager import: result file: %v\n", werr)
	}
	if code == 0 {
		return nil
	}
	return &exitError{code: code, msg: "imager import: " + j.res.Message}
}

// parseImport reads import's command line into a job ready to run; its
// errors are usage errors.
func parseImport(args []string, log io.Writer) (*importJob, *importCommand, error) {
	j := &importJob{zero: target.ZeroProbe, log: log}
	cmd := &importCommand{}
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	fs.StringVar(&cmd.resultFile, "result-file", "", "where the result JSON goes (default "+jobapi.ResultPath+" when it exists)")
	fs.StringVar(&j.target, "target", "", "a directory (Filesystem volume) or a block device")
	fs.StringVar(&j.targetFormat, "target-format", "raw", "raw (disk.img, or the device's content) or vmdk")
	fs.StringVar(&j.targetName, "target-name", "", "file name in the target directory (default disk.img, or disk.vmdk)")
	fs.StringVar(&j.targetMode, "target-mode", "auto", "auto, filesystem, or block (write a regular file as a device would be)")
	fs.Var(&j.zero, "zero-mode", "zero ranges on block targets: probe (write zeros only where the device does not read zeros), skip (the device reads zeros), write")
	fs.Float64Var(&j.overhead, "fs-overhead", jobapi.FSOverhead, "fraction of a Filesystem volume its filesystem may keep, for the PVC size a refusal names")
	fs.StringVar(&j.sourceFormat, "source-format", "auto", "auto, raw, vmdk or ova")
	fs.StringVar(&j.ovaDisk, "ova-disk", "", "the OVA disk to import: index (from 0), diskId or file name (default the first); all: every disk, each into a directory of --target named from the OVF")
	sizeFlag := fs.String("size", "", "virtual size of the imported disk (default the source's; may not be smaller)")
	maxSizeFlag := fs.String("max-size", "", "largest virtual size the disk may have: a source that expands past it fails TargetTooSmall as it does (default: what the target holds)")
	checksum := fs.String("checksum", "", "sha256:HEX of the source bytes; a mismatch fails permanently")
	fs.DurationVar(&j.deadline, "deadline", 0, "fail (transiently, DeadlineExceeded) an import not finished after this long (0: no limit)")
	fs.StringVar(&j.scratch, "scratch-dir", "", "where a source that needs random access is spooled when it cannot be read in place")
	var options optionList
	fs.Var(&options, "o", "vmdk target options (as convert): subformat=...,adapter_type=...")
	fs.IntVar(&j.level, "c", 0, "zlib level for a streamOptimized target")
	fs.DurationVar(&cmd.interval, "progress-interval", 2*time.Second, "how often a JSON progress line goes to stdout (0: never)")
	fs.BoolVar(&cmd.human, "p", false, "human progress on stderr")
	cache := fs.String("t", "writeback", "writeback (fsync when done) or unsafe")
	httpFlags(fs, &j.http)
	fs.StringVar(&j.backing, "b", "", "with --vsphere-delta-from: the image imported at that snapshot, the parent of the delta VMDK written")
	var vs jobapi.VSphereArgs
	vsphereFlags(fs, &vs)
	j.paths.register(fs)
	pos, err := parseArgsRange(fs, args, 0, 1)
	if err == nil && *sizeFlag != "" {
		j.size, err = parseSize(*sizeFlag)
	}
	if err == nil && *maxSizeFlag != "" {
		j.maxSize, err = parseSize(*maxSizeFlag)
	}
	if err == nil {
		src := ""
		if len(pos) == 1 {
			src = pos[0]
		}
		err = j.configure(src, *checksum, *cache, options)
	}
	if err == nil {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		err = j.configureVSphere(&vs, set, len(pos), *checksum)
	}
	if err != nil {
		return nil, nil, asUsage(err)
	}
	return j, cmd, nil
}

func writeResult(path string, r *jobapi.Result) error {
	if path == "" {
		return nil
	}
	return jobapi.Write(path, r)
}

// configure checks the flags before any work starts; whatever it rejects
// is a usage error.
func (j *importJob) configure(source, checksum, cache string, options optionList) error {
	j.source = source
	if j.target == "" {
		return errors.New("--target is required")
	}
	switch j.targetFormat {
	case "raw":
		if len(options) != 0 {
			return errors.New("-o applies to --target-format vmdk")
		}
	case "vmdk":
		var err error
		if j.vmdkOpts, err = parseVMDKOptions(options); err != nil {
			return err
		}
	default:
		return fmt.Errorf("--target-format %q: want raw or vmdk", j.targetFormat)
	}
	switch j.targetMode {
	case "auto", "filesystem", "block":
	default:
		return fmt.Errorf("--target-mode %q: want auto, filesystem or block", j.targetMode)
	}
	switch j.sourceFormat {
	case "auto", "raw", "vmdk", "ova":
	default:
		return fmt.Errorf("--source-format %q: want auto, raw, vmdk or ova", j.sourceFormat)
	}
	if j.ovaDisk == ovaAll {
		switch {
		case j.targetMode == "block":
			return errors.New("--ova-disk all writes each disk into a directory of --target: not with --target-mode block")
		case j.size != 0:
			return errors.New("--ova-disk all: --size would apply to every disk; import the disks one by one to size them")
		}
	}
	if j.deadline < 0 {
		return fmt.Errorf("--deadline %v: want a positive duration, or 0 for none", j.deadline)
	}
	if err := checkHTTPOptions(j.http); err != nil {
		return err
	}
	if j.overhead < 0 || j.overhead >= 1 {
		return fmt.Errorf("--fs-overhead %v: want a fraction in [0, 1)", j.overhead)
	}
	if cache != "writeback" && cache != "unsafe" {
		return fmt.Errorf("-t %q: want writeback or unsafe", cache)
	}
	j.sync = cache == "writeback"
	if checksum != "" {
		hexSum, ok := strings.CutPrefix(checksum, "sha256:")
		sum, err := hex.DecodeString(hexSum)
		if !ok || err != nil || len(sum) != sha256.Size {
			return fmt.Errorf("--checksum %q: want sha256: and 64 hex digits", checksum)
		}
		j.wantSum, j.hash = sum, sha256.New()
	}
	return nil
}

// finishResult fills the result from the import's outcome and returns the
// exit code.
func (j *importJob) finishResult(err error) int {
	if len(j.disks) > 0 {
		j.res.Target, j.res.TargetFormat = j.target, j.targetFormat
		if err == nil {
			j.describeDisks()
		}
	}
	if j.out != nil {
		j.res.Target, j.res.TargetFormat = j.outPath, j.targetFormat
		if err == nil {
			j.out.Describe(&j.res)
		}
	}
	return settle(&j.res, err, fmt.Sprintf("imported %s into %s", jobapi.RedactURL(j.source), j.res.Target))
}

// httpFlags registers the flags of HTTP(S) sources.
func httpFlags(fs *flag.FlagSet, o *source.HTTPOptions) {
	o.Pace.Min = defaultMinThroughput
	fs.StringVar(&o.CAFile, "ca-file", "", "PEM bundle of extra CAs to trust for https sources")
	fs.StringVar(&o.TokenFile, "bearer-token-file", "", "file holding a bearer token for the source")
	fs.StringVar(&o.UserFile, "username-file", "", "file holding a basic-auth user name (with --password-file)")
	fs.StringVar(&o.PassFile, "password-file", "", "file holding a basic-auth password")
	fs.StringVar(&o.CredsDir, "credentials-dir", "", "a mounted Secret: its token file (bearer), or username and password files (basic auth)")
	fs.IntVar(&o.Retries, "retries", 5, "retries of a transient network failure, each resuming where it stopped")
	fs.DurationVar(&o.Backoff, "retry-backoff", time.Second, "first wait between retries (doubles each time, at most 30s)")
	fs.DurationVar(&o.StallTimeout, "stall-timeout", time.Minute, "abandon (and retry) a connection that delivers nothing for this long")
	fs.Var(&minThroughput{&o.Pace.Min}, "min-throughput", "abandon (and retry) a source delivering less than this many bytes per second over --throughput-window of waiting for it (0: no minimum)")
	fs.DurationVar(&o.Pace.Window, "throughput-window", time.Minute, "the window --min-throughput is measured over")
	fs.BoolVar(&o.InsecureCreds, "insecure-allow-credentials-over-http", false, "send credentials to an http:// source, or after a redirect to one (anyone on the path can read them)")
	fs.IntVar(&o.Connections, "http-connections", defaultHTTPConnections, fmt.Sprintf("Range requests an http(s) source read in place keeps in flight, with read-ahead (1: one at a time, no read-ahead; at most %d)", source.MaxConnections))
}

// defaultHTTPConnections: ESXi throttles each connection; four in
// parallel is what tools reading its datastores use (Proxmox's importer),
// and little load for any server.
const defaultHTTPConnections = 4

// checkHTTPOptions checks the HTTP flags before any work; its errors are
// usage errors.
func checkHTTPOptions(o source.HTTPOptions) error {
	if p := o.Pace; p.Min > 0 && p.Window <= 0 {
		return fmt.Errorf("--throughput-window %v: want a positive duration", p.Window)
	}
	if o.Connections < 1 || o.Connections > source.MaxConnections {
		return fmt.Errorf("--http-connections %d: want 1 to %d", o.Connections, source.MaxConnections)
	}
	return nil
}

// defaultMinThroughput: a source slower than 64 KiB/s for a minute of
// waiting is stuck for any disk worth importing (a GiB takes 4.5 hours),
// while a healthy link, even a slow WAN, is far above it.
const defaultMinThroughput = 64 << 10

// minThroughput is --min-throughput: a size (64k, 1M) per second, or 0.
type minThroughput struct{ v *int64 }

func (m minThroughput) String() string {
	if m.v == nil {
		return ""
	}
	return strconv.FormatInt(*m.v, 10)
}

func (m minThroughput) Set(s string) error {
	if strings.TrimSpace(s) == "0" {
		*m.v = 0
		return nil
	}
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*m.v = n
	return nil
}
