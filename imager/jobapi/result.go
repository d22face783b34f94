// Package jobapi is the contract between imager, run as a Job, and the
// controllers that run it. One home for each side's half:
//
//   - the command lines the controllers build (CreateArgs, ConvertArgs,
//     ImportArgs, InfoArgs), which imager's tests parse with its own flags;
//   - what both sides must agree on: ResultPath, FSOverhead, and the one
//     size rule, RequiredBytes, by which PVCs are sized and imager checks
//     that a disk fits;
//   - how a Job ended: one Result JSON object written to the container's
//     termination-message file, with exit codes and reasons, and the
//     Progress lines on stdout. The controller needs nothing else from
//     the pod (no API access, no log scraping).
//
// It imports nothing of either side.
package jobapi

import (
	"encoding/json"
	"fmt"
	"os"
)

// Phases.
const (
	Succeeded = "Succeeded"
	Failed    = "Failed"
)

// Reasons: constant, CamelCase, safe to copy into a Condition's reason.
const (
	ReasonSucceeded        = "Succeeded"
	ReasonChecksumMismatch = "ChecksumMismatch"
	ReasonTargetTooSmall   = "TargetTooSmall"
	ReasonInvalidImage     = "InvalidImage"
	ReasonUnsupportedImage = "UnsupportedImage"
	ReasonChainBroken      = "ChainBroken"
	ReasonSourceNotFound   = "SourceNotFound"
	ReasonUnauthorized     = "Unauthorized"
	ReasonSourceError      = "SourceError"  // an HTTP status or TLS failure that a retry will not fix
	ReasonNetworkError     = "NetworkError" // transient: retries ran out
	// ReasonSourceInUse: the server refuses a file something holds open
	// (ESXi locks a running VM's disks). Transient: the import works once
	// the VM is powered off, and the controller's retries pick that up.
	ReasonSourceInUse      = "SourceInUse"
	ReasonTargetError      = "TargetError" // the target could not be opened or written, for a reason none below names
	ReasonInvalidArguments = "InvalidArguments"
	ReasonTerminated       = "Terminated"
	ReasonDeadlineExceeded = "DeadlineExceeded" // transient: past imager's --deadline
	ReasonFailed           = "Failed"           // anything else: transient

	// ReasonLeaseFailed: a vSphere NFC export lease was not ready in
	// time, was failed by the server, or its stream stopped short.
	// Transient: a new lease may complete.
	ReasonLeaseFailed = "LeaseFailed"

	// Target failures by errno (README, "Exit codes and reasons").
	ReasonFileTooLarge      = "FileTooLarge"      // EFBIG: above the target filesystem's largest file
	ReasonReadOnlyTarget    = "ReadOnlyTarget"    // EROFS
	ReasonTargetNotWritable = "TargetNotWritable" // EACCES, EPERM writing the target
	ReasonNoSpace           = "NoSpace"           // transient: ENOSPC on a volume big enough for the disk
	ReasonIOError           = "IOError"           // transient: EIO, which a new attempt (node, path) may not meet
)

// Exit codes of imager commands that write a result.
const (
	ExitOK         = 0
	ExitTransient  = 1   // a retry may succeed
	ExitUsage      = 2   // bad flags or arguments
	ExitPermanent  = 3   // the same input fails the same way: do not retry
	ExitTerminated = 143 // SIGTERM or SIGINT
)

// MaxMessage bounds Message: Kubernetes keeps at most 4096 bytes of a
// termination message.
const MaxMessage = 2048

// Result is how an import (or any Job command) ended.
type Result struct {
	Phase   string `json:"phase"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
	// Permanent failures must not be retried.
	Permanent bool `json:"permanent,omitempty"`
	// VirtualSize is the disk's size as the guest sees it.
	VirtualSize int64 `json:"virtualSize,omitempty"`
	// AllocatedBytes is what the written image occupies on the target.
	AllocatedBytes int64 `json:"allocatedBytes,omitempty"`
	// CID, ParentCID and CreateType describe the VMDK written (a VMDK
	// target) or read (a raw target); CIDs are 8 hex digits.
	CID        string `json:"cid,omitempty"`
	ParentCID  string `json:"parentCID,omitempty"`
	CreateType string `json:"createType,omitempty"`
	// SourceFormat is raw or vmdk; Target is the file or device written.
	SourceFormat string `json:"sourceFormat,omitempty"`
	Target       string `json:"target,omitempty"`
	TargetFormat string `json:"targetFormat,omitempty"`
	// SHA256 of the source bytes, when computed (--checksum).
	SHA256 string `json:"sha256,omitempty"`
	// Spooled: the source was copied to scratch space first (no Range
	// support, or a compressed non-stream image).
	Spooled bool `json:"spooled,omitempty"`
	// BytesRead is what a delta import read of the delta's data (not the
	// disk); BytesWritten and Ranges what apply-delta wrote into its
	// target (data and zeros) in how many ranges.
	BytesRead    int64 `json:"bytesRead,omitempty"`
	BytesWritten int64 `json:"bytesWritten,omitempty"`
	Ranges       int64 `json:"ranges,omitempty"`
	// VSphere describes what a vSphere source read.
	VSphere *VSphereResult `json:"vsphere,omitempty"`
	// Disks are the disks written by `import --ova-disk all`, each in
	// the directory Name of Target, in the OVA's member order. Write
	// keeps as many as fit a termination message and counts the others
	// in DisksOmitted.
	Disks        []DiskResult `json:"disks,omitempty"`
	DisksOmitted int          `json:"disksOmitted,omitempty"`
}

// DiskResult is one disk of an OVA imported with --ova-disk all.
type DiskResult struct {
	Name           string `json:"name"`
	VirtualSize    int64  `json:"virtualSize,omitempty"`
	AllocatedBytes int64  `json:"allocatedBytes,omitempty"`
	// SHA256 of the disk's file in the OVA, when it was one member and
	// was hashed (its manifest names SHA256, or came after it).
	SHA256 string `json:"sha256,omitempty"`
}

// maxDisks is the most disks a result lists before it is measured: far
// more than fit.
const maxDisks = 32

// MaxResult is the most a result written by Write takes: what Kubernetes
// keeps of a termination message.
const MaxResult = 4096

// Write writes r to path (truncating it), Message with its URLs redacted
// (RedactURL), then shortened to MaxMessage: redacting can lengthen a
// message (?a becomes ?REDACTED), so the cut comes last to keep the bound.
func Write(path string, r *Result) error {
	c := *r
	c.VSphere = r.VSphere.bounded()
	c.Message = RedactURL(c.Message)
	if len(c.Message) > MaxMessage {
		c.Message = c.Message[:MaxMessage-3] + "..."
	}
	disks := r.Disks
	if len(disks) > maxDisks {
		disks, c.DisksOmitted = disks[:maxDisks], r.DisksOmitted+len(disks)-maxDisks
	}
	c.Disks = make([]DiskResult, 0, len(disks))
	for _, d := range disks {
		if len(d.Name) > 64 {
			d.Name = d.Name[:61] + "..."
		}
		c.Disks = append(c.Disks, d)
	}
	b, err := json.Marshal(&c)
	// The list of disks is cut from its end until the whole fits.
	for err == nil && len(b)+1 > MaxResult && len(c.Disks) > 0 {
		c.Disks, c.DisksOmitted = c.Disks[:len(c.Disks)-1], c.DisksOmitted+1
		b, err = json.Marshal(&c)
	}
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Parse reads a result from a termination message.
func Parse(msg string) (*Result, error) {
	var r Result
	if err := json.Unmarshal([]byte(msg), &r); err != nil {
		return nil, fmt.Errorf("termination message is not an imager result: %w", err)
	}
	if r.Phase != Succeeded && r.Phase != Failed {
		return nil, fmt.Errorf("termination message has phase %q", r.Phase)
	}
	return &r, nil
}

// Progress is the JSON line imager prints on stdout while it works.
type Progress struct {
	Progress   float64 `json:"progress"` // percent, 0 to 100
	BytesDone  int64   `json:"bytesDone"`
	BytesTotal int64   `json:"bytesTotal"`
}
