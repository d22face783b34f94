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
	"path/filepath"
	"strings"
	"time"

	imgcopy "github.com/vmdkpop/vmdkpop/imager/internal/copy"
	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
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
	paths        pathFlags
	size         int64 // --size: the target's virtual size (0: the source's)

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
	spools   []string
}

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

	// The copy's own context carries errTerminated as its cause, so what
	// it was doing when stopped reads "terminated by a signal".
	jobCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	j.ctx = jobCtx
	j.prog = imgcopy.NewProgress(stdout, stderr, cmd.interval, cmd.human)
	done := make(chan error, 1)
	go func() { done <- j.runSafe() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		cancel(errTerminated)
		select { // give the copy a moment to stop and clean up
		case <-done:
		case <-time.After(10 * time.Second):
		}
		err = errTerminated
	}
	j.prog.Stop(err == nil)
	code := j.finishResult(err)
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
	fs.StringVar(&j.ovaDisk, "ova-disk", "", "the OVA disk to import: index (from 0), diskId or file name (default the first)")
	sizeFlag := fs.String("size", "", "virtual size of the imported disk (default the source's; may not be smaller)")
	checksum := fs.String("checksum", "", "sha256:HEX of the source bytes; a mismatch fails permanently")
	fs.StringVar(&j.scratch, "scratch-dir", "", "where a source that needs random access is spooled when it cannot be read in place")
	var options optionList
	fs.Var(&options, "o", "vmdk target options (as convert): subformat=...,adapter_type=...")
	fs.IntVar(&j.level, "c", 0, "zlib level for a streamOptimized target")
	fs.DurationVar(&cmd.interval, "progress-interval", 2*time.Second, "how often a JSON progress line goes to stdout (0: never)")
	fs.BoolVar(&cmd.human, "p", false, "human progress on stderr")
	cache := fs.String("t", "writeback", "writeback (fsync when done) or unsafe")
	httpFlags(fs, &j.http)
	j.paths.register(fs)
	pos, err := parseArgs(fs, args, 1)
	if err == nil && *sizeFlag != "" {
		j.size, err = parseSize(*sizeFlag)
	}
	if err == nil {
		err = j.configure(pos[0], *checksum, *cache, options)
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

// runSafe runs the import, turning a panic into an error (this runs where
// main's recover cannot see), and removes spooled files.
func (j *importJob) runSafe() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error: %v", r)
		}
		for _, p := range j.spools {
			os.Remove(p)
		}
	}()
	err = j.run()
	if err == nil {
		err = j.verifyChecksum()
	}
	if j.out != nil {
		err = j.finishTarget(err)
		if !j.outBlock { // a device's size was checked before writing
			err = target.VolumeTooSmall(err, filepath.Dir(j.outPath), j.outSize)
		}
	}
	return err
}

func (j *importJob) run() error {
	switch {
	case j.source == "-":
		return j.fromReader(bufio.NewReaderSize(j.hashed(os.Stdin), source.HeadBytes), -1, nil, true)
	case strings.HasPrefix(j.source, "http://") || strings.HasPrefix(j.source, "https://"):
		s, err := source.OpenHTTP(j.ctx, j.source, j.http, j.log)
		if err != nil {
			return err
		}
		defer s.Close()
		return j.fromReader(bufio.NewReaderSize(j.hashed(s), source.HeadBytes), s.Size(), s, true)
	}
	return j.fromFile(j.source)
}

// hashed passes r through the source checksum, when one is wanted.
func (j *importJob) hashed(r io.Reader) io.Reader {
	if j.hash == nil {
		return r
	}
	return io.TeeReader(r, j.hash)
}

func (j *importJob) verifyChecksum() error {
	if j.hash == nil {
		return nil
	}
	got := j.hash.Sum(nil)
	j.res.SHA256 = hex.EncodeToString(got)
	if string(got) != string(j.wantSum) {
		return failed(errChecksumMismatch, fmt.Errorf("the source's sha256 is %x, not the expected %x", got, j.wantSum))
	}
	return nil
}

// fromReader imports a sequential source. size is its length if known;
// remote, when set, can re-read it with Range requests. outer is false for
// what was found inside a compressed file or an OVA. Whatever the import
// leaves unread is drained, so the checksum covers every byte.
func (j *importJob) fromReader(br *bufio.Reader, size int64, remote *source.HTTPStream, outer bool) error {
	head, err := br.Peek(source.HeadBytes)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	format := j.sourceFormat
	if !outer && format == "ova" {
		format = "auto"
	}
	kind, err := source.Detect(head, format)
	if err != nil {
		return err
	}
	if !outer && kind == source.KindOVA {
		return fmt.Errorf("%w: an OVA inside an OVA or a compressed file", source.ErrFormat)
	}
	switch kind {
	case source.KindGzip, source.KindZstd:
		dr, err := source.Decompress(kind, br)
		if err != nil {
			return err
		}
		defer dr.Close()
		if err := j.fromReader(bufio.NewReaderSize(dr, source.HeadBytes), -1, nil, false); err != nil {
			return err
		}
	case source.KindOVA:
		r, disk, n, err := source.OpenOVADisk(br, j.ovaDisk)
		if err != nil {
			return err
		}
		if disk.Of > 1 {
			fmt.Fprintf(j.log, "imager: importing OVA disk %s of %d\n", disk.Description, disk.Of)
		}
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
	case source.KindStream:
		if err := j.fromStream(br); err != nil {
			return err
		}
	case source.KindRaw:
		if size < 0 && j.targetFormat == "vmdk" {
			return j.fromSpool(br, size, "a raw source of unknown size")
		}
		if err := j.fromRaw(br, size); err != nil {
			return err
		}
	case source.KindVMDK:
		if remote != nil && remote.RangeOK() && j.hash == nil && size > 0 {
			remote.Close()
			return j.fromRemote(remote, size)
		}
		why := "a VMDK that is not streamOptimized needs random access"
		if remote != nil && !remote.RangeOK() {
			why += " and the server does not accept Range requests"
		}
		return j.fromSpool(br, size, why)
	}
	if outer {
		if _, err := io.Copy(io.Discard, source.WithContext(j.ctx, br)); err != nil {
			return err
		}
	}
	return nil
}

// fromFile imports a local file: VMDKs (chains and multi-extent images
// included) and raw files are read in place at random offsets.
func (j *importJob) fromFile(path string) error {
	f, err := source.OpenFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if j.hash != nil {
		if _, err := io.Copy(j.hash, source.WithContext(j.ctx, f)); err != nil {
			return err
		}
		if err := j.verifyChecksum(); err != nil {
			return err // before a byte is written
		}
		j.hash = nil
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	head := make([]byte, source.HeadBytes)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return err
	}
	kind, err := source.Detect(head[:n], j.sourceFormat)
	if err != nil {
		return err
	}
	switch kind {
	case source.KindOVA, source.KindGzip, source.KindZstd:
		return j.fromReader(bufio.NewReaderSize(f, source.HeadBytes), -1, nil, true)
	case source.KindRaw:
		return j.fromImageFile(path, "raw")
	}
	return j.fromImageFile(path, "vmdk")
}

func (j *importJob) fromImageFile(path, format string) error {
	img, err := openImage(path, format, &j.paths)
	if err != nil {
		return err
	}
	defer img.Close()
	return j.fromImage(img)
}

// fromRemote opens a single-file VMDK over HTTP Range requests.
func (j *importJob) fromRemote(s *source.HTTPStream, size int64) error {
	d, err := vmdk.OpenReaderAt(s.ReaderAt(j.ctx, size), size, jobapi.RedactURL(j.source)) // the name its errors quote
	if err != nil {
		return err
	}
	defer d.Close()
	return j.fromImage(vmdkImage{d})
}

// fromSpool copies the rest of a sequential source to the scratch
// directory and imports it from there.
func (j *importJob) fromSpool(r io.Reader, size int64, why string) error {
	if j.scratch == "" {
		return failed(source.ErrNoScratch, fmt.Errorf("%s: give --scratch-dir to spool it", why))
	}
	fmt.Fprintf(j.log, "imager: spooling the source to %s: %s\n", j.scratch, why)
	j.prog.Phase("spool")
	j.prog.SetTotal(size)
	path, err := source.Spool(j.ctx, j.scratch, countingReader{r, j.prog})
	if path != "" {
		j.spools = append(j.spools, path)
		j.res.Spooled = true
	}
	if err != nil {
		return err
	}
	if err := j.verifyChecksum(); err != nil {
		return err // before a byte is written
	}
	j.hash = nil
	j.prog.Phase("import")
	return j.fromImageFile(path, "vmdk")
}

// fromImage copies a random-access image with parallel workers.
func (j *importJob) fromImage(img image) error {
	if v, ok := img.(vmdkImage); ok {
		j.describeSource(v.Descriptor())
	} else {
		j.res.SourceFormat = "raw"
	}
	t, err := j.openTarget(img.Size())
	if err != nil {
		return err
	}
	report := func(done int64) {
		if done >= 0 {
			j.prog.Set(done)
		}
	}
	if t.Ordered() {
		return imgcopy.InOrder(j.ctx, img, t, report)
	}
	return imgcopy.Image(j.ctx, img, t, report)
}

func (j *importJob) describeSource(d *vmdk.Descriptor) {
	j.res.SourceFormat = "vmdk"
	j.res.CreateType = d.CreateType
	j.res.CID = fmt.Sprintf("%08x", d.CID)
	j.res.ParentCID = fmt.Sprintf("%08x", d.ParentCID)
}

// fromStream imports a streamOptimized VMDK while it is read: grains are
// inflated in parallel and written as they arrive.
func (j *importJob) fromStream(r io.Reader) error {
	sr, err := vmdk.NewStreamReader(r)
	if err != nil {
		return err
	}
	defer sr.Close()
	j.describeSource(sr.Descriptor())
	t, err := j.openTarget(sr.Size())
	if err != nil {
		return err
	}
	var pos int64
	for {
		if err := context.Cause(j.ctx); err != nil {
			return err
		}
		g, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := zeroGap(t, pos, g.Offset); err != nil {
			return err
		}
		if err := imgcopy.WriteSparse(t, g.Data, g.Offset); err != nil {
			return targetErr(err)
		}
		pos = g.Offset + int64(len(g.Data))
		j.prog.Set(pos)
	}
	return zeroGap(t, pos, max(j.outSize, sr.Size()))
}

// fromRaw imports raw bytes read in order; size < 0 when unknown.
func (j *importJob) fromRaw(r io.Reader, size int64) error {
	j.res.SourceFormat = "raw"
	t, err := j.openTarget(size)
	if err != nil {
		return err
	}
	buf := make([]byte, imgcopy.ChunkSize)
	var pos int64
	for {
		if err := context.Cause(j.ctx); err != nil {
			return err
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if werr := imgcopy.WriteSparse(t, buf[:n], pos); werr != nil {
				return targetErr(werr)
			}
			pos += int64(n)
			j.prog.Set(pos)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if size >= 0 && pos != size {
		return failed(errTruncated, fmt.Errorf("the source ended after %d of %d bytes", pos, size))
	}
	j.outSize = max(pos, j.size)
	return nil
}

type countingReader struct {
	r io.Reader
	p *imgcopy.Progress
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.Add(int64(n))
	return n, err
}

// finishResult fills the result from the import's outcome and returns the
// exit code.
func (j *importJob) finishResult(err error) int {
	if j.out != nil {
		j.res.Target, j.res.TargetFormat = j.outPath, j.targetFormat
		if err == nil {
			j.out.Describe(&j.res)
		}
	}
	return settle(&j.res, err, fmt.Sprintf("imported %s into %s", jobapi.RedactURL(j.source), j.res.Target))
}

// targetPath is the file (or device) an import writes.
func (j *importJob) targetPath() (path string, block bool, err error) {
	fi, err := os.Stat(j.target)
	if err != nil {
		return "", false, target.MarkOpen(fmt.Errorf("target: %w", err))
	}
	switch {
	case j.targetMode == "block" || j.targetMode == "auto" && fi.Mode()&os.ModeDevice != 0:
		if j.targetFormat != "raw" {
			return "", false, failed(errBadRequest, errors.New("a block target takes --target-format raw"))
		}
		if fi.IsDir() {
			return "", false, failed(errBadRequest, fmt.Errorf("--target-mode block: %s is a directory", j.target))
		}
		return j.target, true, nil
	case !fi.IsDir():
		return "", false, failed(errBadRequest, fmt.Errorf("target %s is neither a directory nor a block device", j.target))
	}
	name := j.targetName
	if name == "" {
		name = "disk.img"
		if j.targetFormat == "vmdk" {
			name = "disk.vmdk"
		}
	}
	if name != filepath.Base(name) || name == "." || name == ".." {
		return "", false, failed(errBadRequest, fmt.Errorf("--target-name %q: want a plain file name", name))
	}
	return filepath.Join(j.target, name), false, nil
}

// targetErr says an error came from writing the target.
func targetErr(err error) error {
	if err == nil {
		return nil
	}
	return target.Mark(fmt.Errorf("target: %w", err))
}

// httpFlags registers the flags of HTTP(S) sources.
func httpFlags(fs *flag.FlagSet, o *source.HTTPOptions) {
	fs.StringVar(&o.CAFile, "ca-file", "", "PEM bundle of extra CAs to trust for https sources")
	fs.StringVar(&o.TokenFile, "bearer-token-file", "", "file holding a bearer token for the source")
	fs.StringVar(&o.UserFile, "username-file", "", "file holding a basic-auth user name (with --password-file)")
	fs.StringVar(&o.PassFile, "password-file", "", "file holding a basic-auth password")
	fs.StringVar(&o.CredsDir, "credentials-dir", "", "a mounted Secret: its token file (bearer), or username and password files (basic auth)")
	fs.IntVar(&o.Retries, "retries", 5, "retries of a transient network failure, each resuming where it stopped")
	fs.DurationVar(&o.Backoff, "retry-backoff", time.Second, "first wait between retries (doubles each time, at most 30s)")
	fs.DurationVar(&o.StallTimeout, "stall-timeout", time.Minute, "abandon (and retry) a connection that delivers nothing for this long")
	fs.BoolVar(&o.InsecureCreds, "insecure-allow-credentials-over-http", false, "send credentials to an http:// source, or after a redirect to one (anyone on the path can read them)")
}
