package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// A VMDK that `imager import --vsphere-*` writes is stamped with where it
// came from, in its descriptor's Disk Data Base: which disk of which VM,
// at which point. A delta import reads the stamp back from its -b: a base
// of the right size is not enough (the disks of VMs cloned from one
// template all have one size, and so has the same disk at every
// snapshot), and a delta written over a base that is not the disk at
// --vsphere-delta-from reads as neither point, with success reported.

// The stamp's DDB keys. VMware and qemu-img keep DDB keys they do not
// know, and ignore them.
const (
	ddbStampVM       = "ddb.vmdkpop.vsphere.vm"       // the VM's instance UUID
	ddbStampDisk     = "ddb.vmdkpop.vsphere.disk"     // the virtual disk's device key
	ddbStampSnapshot = "ddb.vmdkpop.vsphere.snapshot" // the snapshot's moref ("": the VM as it was, powered off)
	ddbStampTop      = "ddb.vmdkpop.vsphere.top"      // the datastore path of the chain's top file at that point
)

// vsphereStamp identifies a disk at one point: together, its parts name
// one chain's content (a snapshot's moref is never reused on its server,
// a top file may be once its snapshot is deleted).
type vsphereStamp struct {
	vm, disk, snapshot, top string
}

// stampOf is d's stamp.
func stampOf(d *vsphere.Disk) vsphereStamp {
	s := vsphereStamp{vm: d.InstanceUUID, disk: strconv.Itoa(int(d.Device.Key))}
	if s.vm == "" {
		// A server that gives no instance UUID: its moref, which
		// names the VM on that server.
		s.vm = "moref " + d.VM.Value
	}
	if d.Snapshot != nil {
		s.snapshot = d.Snapshot.Value
	}
	if len(d.Chain) > 0 {
		s.top = d.Chain[0].Path
	}
	s.vm, s.snapshot, s.top = stampValue(s.vm), stampValue(s.snapshot), stampValue(s.top)
	return s
}

// ddb is the stamp as DDB entries.
func (s vsphereStamp) ddb() []vmdk.KeyValue {
	return []vmdk.KeyValue{{Key: ddbStampVM, Value: s.vm}, {Key: ddbStampDisk, Value: s.disk}, {Key: ddbStampSnapshot, Value: s.snapshot}, {Key: ddbStampTop, Value: s.top}}
}

// readStamp is the stamp in desc's DDB; ok is false when it has none (or
// only part of one: not written by an import from vSphere).
func readStamp(desc *vmdk.Descriptor) (s vsphereStamp, ok bool) {
	n := 0
	for _, kv := range desc.DDB {
		var p *string
		switch strings.ToLower(kv.Key) {
		case strings.ToLower(ddbStampVM):
			p = &s.vm
		case strings.ToLower(ddbStampDisk):
			p = &s.disk
		case strings.ToLower(ddbStampSnapshot):
			p = &s.snapshot
		case strings.ToLower(ddbStampTop):
			p = &s.top
		default:
			continue
		}
		*p = kv.Value
		n++
	}
	return s, n == 4 && s.vm != ""
}

// differences says how s differs from want, in the user's words.
func (s vsphereStamp) differences(want vsphereStamp) string {
	var d []string
	for _, f := range []struct{ what, got, want string }{
		{"VM", s.vm, want.vm},
		{"disk key", s.disk, want.disk},
		{"snapshot", s.snapshot, want.snapshot},
		{"top file", s.top, want.top},
	} {
		if f.got != f.want {
			g := f.got
			if g == "" {
				g = "none"
			}
			d = append(d, fmt.Sprintf("%s %s, not %s", f.what, truncName(g), truncName(f.want)))
		}
	}
	return strings.Join(d, "; ")
}

// maxStampValue bounds a stamp's value; a longer one (a server's, so
// untrusted) is stamped as its SHA-256, which compares as well.
const maxStampValue = 256

// stampValue is v as the stamp holds it: as it is when short, valid UTF-8
// and without control characters (what a descriptor keeps verbatim, and
// a person can read), else "sha256:" and its hash.
func stampValue(v string) string {
	if len(v) <= maxStampValue && utf8.ValidString(v) && !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// truncName keeps a name from the server one readable part of a message.
func truncName(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// checkBaseStamp refuses a delta import's base (desc, the descriptor of
// -b) unless its stamp is that of from, the disk at --vsphere-delta-from.
func (j *importJob) checkBaseStamp(desc *vmdk.Descriptor, from *vsphere.Disk) error {
	want := stampOf(from)
	at := fmt.Sprintf("%s of VM %s at snapshot %s", from.Label, from.VMName, j.res.VSphere.DeltaFrom)
	got, ok := readStamp(desc)
	if !ok {
		return failed(errBadRequest, fmt.Errorf("-b %s has no vSphere provenance (no %s.* entries in its descriptor: imager import --vsphere-* did not write it), so nothing says it is the image of %s; give the image imported at that snapshot (one imported before imports were stamped must be imported again)",
			j.backing, strings.TrimSuffix(ddbStampVM, ".vm"), at))
	}
	if got != want {
		return failed(errBadRequest, fmt.Errorf("-b %s is not the image of %s: it was imported from %s; give the image imported at that snapshot",
			j.backing, at, got.differences(want)))
	}
	return nil
}
