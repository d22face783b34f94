package vmdk

import (
	"errors"
	"fmt"
	"strings"
)

// Disks whose descriptor parses but whose data no file holds: vSAN
// objects and raw device mappings. They are refused when the descriptor
// is parsed, so Open (and whatever reads a disk through it) says so before
// anything is written, with what the user can do instead.

const (
	vsanWayForward = "vSAN objects are not files: export the VM (OVF/NFC export) or copy the disk to a VMFS/NFS datastore first"
	rdmWayForward  = "the data is on the LUN, not in the file: migrate the RDM to a virtual disk (Storage vMotion, changing the disk format) or read the LUN itself"
)

// refusedCreateType refuses the createTypes of raw device mappings and raw
// disks (their extent lines are refused too, but a descriptor may say so
// first).
func refusedCreateType(createType string) error {
	switch strings.ToLower(createType) {
	case "vmfsrawdevicemap", "vmfsrdm":
		return refusal{fmt.Errorf("%w: createType %q is a raw device mapping: %s", ErrUnsupported, createType, rdmWayForward)}
	case "vmfspassthroughrawdevicemap", "vmfsrdmp":
		return refusal{fmt.Errorf("%w: createType %q is a pass-through raw device mapping: %s", ErrUnsupported, createType, rdmWayForward)}
	case "vmfsraw":
		return refusal{fmt.Errorf("%w: createType %q is a raw disk: %s", ErrUnsupported, createType, rdmWayForward)}
	}
	return nil
}

// refusedExtent refuses the extent types (and vSAN object names, whatever
// the type) whose content is not in a file; rest is the line's fields
// after the type.
func refusedExtent(t ExtentType, rest []string) error {
	switch t {
	case ExtentVSANSparse:
		return refusal{fmt.Errorf("%w: extent type %s is a vSAN object: %s", ErrUnsupported, t, vsanWayForward)}
	case ExtentVMFSRDM, ExtentVMFSRDMP:
		return refusal{fmt.Errorf("%w: extent type %s is a raw device mapping: %s", ErrUnsupported, t, rdmWayForward)}
	case ExtentVMFSRaw:
		return refusal{fmt.Errorf("%w: extent type %s is a raw disk: %s", ErrUnsupported, t, rdmWayForward)}
	}
	if len(rest) > 0 && isVSANObject(rest[0]) {
		return refusal{fmt.Errorf("%w: extent %q is a vSAN object: %s", ErrUnsupported, truncate(rest[0]), vsanWayForward)}
	}
	return nil
}

// isVSANObject: vSAN descriptors name their objects vsan://<uuid>.
func isVSANObject(name string) bool {
	return len(name) >= 7 && strings.EqualFold(name[:7], "vsan://")
}

// refusal marks the errors above: they win over an unknown descriptor
// version, which would otherwise hide the way forward.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

func isRefusal(err error) bool {
	var r refusal
	return errors.As(err, &r)
}
