package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vmdkpop/vmdkpop/imager/internal/target"
	"github.com/vmdkpop/vmdkpop/imager/internal/vsphere"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// A delta import (warm migration): the disk as of snapshot S2, of which
// only what changed since S1 is read, written as a delta VMDK whose
// parent (-b) is the image imported at S1. What changed is exactly the
// links of S2's chain above S1's (the seSparse or vmfsSparse files ESXi
// wrote between the two): their grains, as data where they hold data and
// as zeroed grains where they read as zeros (a seSparse zero or unmapped
// grain), so that nothing the links define falls through to the parent.

// deltaGrainSize is the delta's grain: the smallest the writer takes. A
// seSparse delta's grains are 4 KiB; each of ours holds the parent's
// bytes around the ones that changed, so a larger grain would copy (and
// apply-delta write) many times the change when a guest writes at
// random.
const deltaGrainSize = 8 << 10

// fromVSphereDelta writes the links of to's chain above from's (above of
// them) into a delta VMDK whose parent is j.backing.
func (j *importJob) fromVSphereDelta(c *vsphere.Client, from, to *vsphere.Disk, above int) error {
	base, err := vmdk.Open(j.backing, j.paths.options())
	if err != nil {
		return fmt.Errorf("-b %s: %w", j.backing, err)
	}
	baseSize, baseCID, baseDesc := base.Size(), base.CID(), base.Descriptor()
	base.Close()
	if baseSize != from.CapacityBytes {
		return failed(errBadRequest, fmt.Errorf("-b %s is a disk of %d bytes, but %s at snapshot %s is %d bytes: it is not the image imported at %s; give that image", j.backing, baseSize, from.Label, j.res.VSphere.DeltaFrom, from.CapacityBytes, j.res.VSphere.DeltaFrom))
	}
	// The size is only the first clue: the stamp says which disk at
	// which point -b is.
	if err := j.checkBaseStamp(baseDesc, from); err != nil {
		return err
	}
	vd, err := vsphere.OpenChain(j.ctx, c, to)
	if err != nil {
		return err
	}
	defer vd.Close()
	if vd.Size() != to.CapacityBytes {
		return fmt.Errorf("%s: %w: the descriptors give %d bytes, vSphere %d: not the disk vSphere describes", j.source, vsphere.ErrChainBroken, vd.Size(), to.CapacityBytes)
	}
	// The link the delta ends on is S1's top, as vSphere sized it.
	atFrom := vd
	for i := 0; i < above && atFrom != nil; i++ {
		atFrom = atFrom.Parent()
	}
	if atFrom == nil || atFrom.Size() != from.CapacityBytes {
		return fmt.Errorf("%s: %w: the chain below the delta's %d links is not the disk of %d bytes vSphere describes at %s", j.source, vsphere.ErrChainBroken, above, from.CapacityBytes, j.res.VSphere.DeltaFrom)
	}

	out, _, err := j.targetPath()
	if err != nil {
		return err
	}
	// The delta is renamed onto out: were out the base, the base would be
	// gone and the delta its own parent.
	if bi, err := os.Stat(j.backing); err == nil {
		if oi, err := os.Stat(out); err == nil && os.SameFile(bi, oi) {
			return failed(errBadRequest, fmt.Errorf("the delta would replace its own parent: -b %s is the target %s; write the delta into another directory", j.backing, out))
		}
	}
	// --size makes the delta's disk larger than vSphere's, as it does a
	// whole import's: what it adds reads as zeros.
	size := to.CapacityBytes
	if j.size > 0 {
		if j.size < size {
			return failed(errBadRequest, fmt.Errorf("--size %d is smaller than the disk's %d bytes at %s", j.size, size, j.source))
		}
		size = j.size
	}
	j.prog.SetTotal(to.CapacityBytes)
	// Built beside its final name, so the parent's path recorded in it
	// (relative to its directory) stays right once renamed.
	tmp := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".delta-tmp")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return targetErr(err)
	}
	o := j.vmdkOpts.create(size, j.backing, &j.paths)
	o.ZeroedGrains, o.GrainSize = true, deltaGrainSize
	if err := vmdk.Create(tmp, o); err != nil {
		return target.VolumeTooSmall(target.MarkOpen(err), filepath.Dir(out), size)
	}
	// Until the delta is in place and described, a failure removes it,
	// at whichever name it has.
	left := tmp
	defer func() {
		if left != "" {
			os.Remove(left)
		}
	}()
	if err := j.copyDelta(vd, tmp, above, baseCID); err != nil {
		return err
	}
	// Rechecked before the rename, as a whole import is before its
	// target is moved into place: a delta of a snapshot deleted (or a
	// chain changed) while it was read is no change between two points,
	// and must not be left at its final name looking finished.
	vsphereCopied(j.ctx, c, to)
	if err := vsphere.Recheck(j.ctx, c, to); err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return targetErr(err)
	}
	left = out
	if err := target.SyncDir(filepath.Dir(out)); err != nil {
		return targetErr(err)
	}
	// The result names the delta (and its size) once it is in place.
	if err := target.DescribeVMDK(&j.res, out, j.paths.options()); err != nil {
		return err
	}
	left = ""
	return nil
}

// copyDelta writes into the delta VMDK at path every range of vd that the
// top `above` links define, and makes it durable.
func (j *importJob) copyDelta(vd *vmdk.Disk, path string, above int, baseCID uint32) error {
	child, err := vmdk.Open(path, vmdk.Options{Root: j.paths.root, AllowUnsafePaths: j.paths.unsafePaths, ReadWrite: true})
	if err != nil {
		return targetErr(err)
	}
	if err := j.writeDelta(vd, child, above, baseCID); err != nil {
		child.Close()
		return err
	}
	// Flush makes the grains, then the tables that point at them,
	// durable (-t unsafe: Close writes the tables, unsynced).
	if j.sync {
		if err := child.Flush(); err != nil {
			child.Close()
			return targetErr(err)
		}
	}
	return targetErr(child.Close())
}

// writeDelta writes vd's ranges from its top `above` links into child.
func (j *importJob) writeDelta(vd, child *vmdk.Disk, above int, baseCID uint32) error {
	path := child.Path()
	if child.ParentCID() != baseCID || child.ChainError() != nil {
		return fmt.Errorf("%s: %w: the new delta does not link -b %s (CID %08x)", path, vmdk.ErrChainBroken, j.backing, baseCID)
	}
	n, err := copyOwnRanges(j.ctx, vd, j.source, above, child, func(m vmdk.Mapping) { j.prog.Add(m.Length) })
	j.res.BytesRead += n.Read
	return err
}
