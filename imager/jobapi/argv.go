package jobapi

import (
	"strconv"
	"strings"
	"time"
)

// The argv builders below are imager's command lines as the controllers
// run them in Jobs. Each field is one flag (empty or zero: not given); the
// order is fixed so a Job's spec is the same on every reconcile. imager's
// tests parse every builder's output with the command's own flags.

// VMDKOptions are the -o options of VMDK output.
type VMDKOptions struct {
	Subformat   string
	AdapterType string
	HWVersion   int
}

// value is the one comma-separated -o value ("" when no option is set).
func (o VMDKOptions) value() string {
	var kv []string
	if o.Subformat != "" {
		kv = append(kv, "subformat="+o.Subformat)
	}
	if o.AdapterType != "" {
		kv = append(kv, "adapter_type="+o.AdapterType)
	}
	if o.HWVersion != 0 {
		kv = append(kv, "hwversion="+strconv.Itoa(o.HWVersion))
	}
	return strings.Join(kv, ",")
}

// argv collects flags, leaving out those not set.
type argv []string

func (a *argv) flag(name string, on bool) {
	if on {
		*a = append(*a, name)
	}
}

func (a *argv) str(name, v string) {
	if v != "" {
		*a = append(*a, name, v)
	}
}

func (a *argv) duration(name string, v time.Duration) {
	if v != 0 {
		*a = append(*a, name, v.String())
	}
}

func (a *argv) int(name string, v int64) {
	if v != 0 {
		*a = append(*a, name, strconv.FormatInt(v, 10))
	}
}

// CreateArgs is `imager create`: a new (or delta) VMDK.
type CreateArgs struct {
	Quiet      bool
	ResultFile string
	Root       string
	Options    VMDKOptions
	Backing    string // -b: the parent; the new image is its delta child
	Image      string
	Size       int64 // 0: the backing image's size
}

// Argv is the command line, "create" first.
func (c CreateArgs) Argv() []string {
	a := argv{"create"}
	a.flag("-q", c.Quiet)
	a.str("--result-file", c.ResultFile)
	a.str("--root", c.Root)
	a.str("-o", c.Options.value())
	a.str("-b", c.Backing)
	a = append(a, c.Image)
	if c.Size != 0 {
		a = append(a, strconv.FormatInt(c.Size, 10))
	}
	return a
}

// ConvertArgs is `imager convert`: an image rewritten in another format
// (a chain flattened into one VMDK).
type ConvertArgs struct {
	TargetFormat string // -O: raw or vmdk
	Options      VMDKOptions
	ResultFile   string
	Root         string
	Source       string
	Target       string
}

// Argv is the command line, "convert" first.
func (c ConvertArgs) Argv() []string {
	a := argv{"convert"}
	a.str("-O", c.TargetFormat)
	a.str("-o", c.Options.value())
	a.str("--result-file", c.ResultFile)
	a.str("--root", c.Root)
	return append(a, c.Source, c.Target)
}

// InfoArgs is `imager info`: what an image holds, into the result.
type InfoArgs struct {
	ResultFile string
	Root       string
	Image      string
}

// Argv is the command line, "info" first.
func (c InfoArgs) Argv() []string {
	a := argv{"info"}
	a.str("--result-file", c.ResultFile)
	a.str("--root", c.Root)
	return append(a, c.Image)
}

// ImportArgs is `imager import`: a source (a path, an http(s) URL or -)
// written into a target directory or device.
type ImportArgs struct {
	ResultFile   string
	Target       string
	TargetFormat string // raw or vmdk
	Options      VMDKOptions
	FSOverhead   float64 // 0: imager's default, FSOverhead
	Size         int64   // 0: the source's virtual size
	// MaxSize bounds the disk's virtual size (0: no bound but the
	// target's): a source of unknown size (stdin, compressed, HTTP
	// without Content-Length) fails TargetTooSmall as it passes it.
	MaxSize int64
	// MinThroughput (bytes/s) over ThroughputWindow: a source slower
	// than that is cut and retried (0: imager's defaults). Deadline
	// bounds the whole import (0: none); past it, it fails transiently.
	MinThroughput    int64
	ThroughputWindow time.Duration
	Deadline         time.Duration
	ScratchDir       string
	CAFile           string
	// CredentialsDir is a mounted Secret: a token file, or username and
	// password files.
	CredentialsDir string
	// InsecureAllowCredentialsOverHTTP sends those credentials to an
	// http:// source.
	InsecureAllowCredentialsOverHTTP bool
	Checksum                         string // sha256:HEX of the source bytes
	OVADisk                          string // index, diskId or file name (never OVADiskAll: an image is one disk)
	Root                             string // where the source's extent and parent paths must stay
	// HTTPConnections is how many Range requests an http(s) source's
	// random-access reads keep in flight (0: imager's default).
	HTTPConnections int64
	// Backing (-b) is the parent of a delta VMDK written by a delta
	// import (VSphere.DeltaFrom): the image imported at DeltaFrom.
	Backing string
	// VSphere, when set, is the source (Source is then empty).
	VSphere *VSphereArgs
	Source  string
}

// OVADiskAll is the --ova-disk that writes every disk of an OVA, each
// into a directory of the target: for the command line, not for a
// controller's Job, whose image is one disk at the target's top (the
// controllers refuse it).
const OVADiskAll = "all"

// Argv is the command line, "import" first.
func (c ImportArgs) Argv() []string {
	a := argv{"import"}
	a.str("--result-file", c.ResultFile)
	a.str("--target", c.Target)
	a.str("--target-format", c.TargetFormat)
	a.str("-o", c.Options.value())
	if c.FSOverhead != 0 {
		a = append(a, "--fs-overhead", strconv.FormatFloat(c.FSOverhead, 'f', -1, 64))
	}
	a.int("--size", c.Size)
	a.int("--max-size", c.MaxSize)
	a.int("--min-throughput", c.MinThroughput)
	a.duration("--throughput-window", c.ThroughputWindow)
	a.duration("--deadline", c.Deadline)
	a.str("--scratch-dir", c.ScratchDir)
	a.str("--ca-file", c.CAFile)
	a.str("--credentials-dir", c.CredentialsDir)
	a.flag("--insecure-allow-credentials-over-http", c.InsecureAllowCredentialsOverHTTP)
	a.str("--checksum", c.Checksum)
	a.str("--ova-disk", c.OVADisk)
	a.str("--root", c.Root)
	a.int("--http-connections", c.HTTPConnections)
	a.str("-b", c.Backing)
	c.VSphere.flags(&a)
	if c.Source != "" {
		a = append(a, c.Source)
	}
	return a
}

// ApplyDeltaArgs is `imager apply-delta`: a delta VMDK's own grains (what
// a delta import wrote) written into a raw disk populated from its
// parent, bringing it to the delta's point.
type ApplyDeltaArgs struct {
	ResultFile string
	Root       string
	Target     string // the raw disk: a file (disk.img) or a block device
	// ExpectParentCID (8 hex digits) refuses a delta whose parentCID is
	// another: the CID of the image the target was populated from.
	ExpectParentCID string
	Delta           string // the delta VMDK
}

// Argv is the command line, "apply-delta" first.
func (c ApplyDeltaArgs) Argv() []string {
	a := argv{"apply-delta"}
	a.str("--result-file", c.ResultFile)
	a.str("--root", c.Root)
	a.str("--target", c.Target)
	a.str("--expect-parent-cid", c.ExpectParentCID)
	return append(a, c.Delta)
}
