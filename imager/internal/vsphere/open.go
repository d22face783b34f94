package vsphere

import (
	"context"
	"errors"
	"fmt"
	"path"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// OpenChain opens the disk's backing chain in place over the datastore's
// /folder API, with the SDK's session: the top's descriptor, and the
// parents its descriptors name. Those must be the files vSphere named, in
// order: a descriptor that links elsewhere (a stale parentFileNameHint, a
// file replaced on the datastore) would be read as the disk, and is a
// broken chain instead.
func OpenChain(ctx context.Context, c *Client, d *Disk) (*vmdk.Disk, error) {
	if len(d.Chain) == 0 || d.Chain[0].URL == nil {
		return nil, tag(ErrInvalidOptions, "VM %s, %s: resolved for transport %s, not read from the datastore", d.VMName, d.Label, d.Transport)
	}
	fsys, name, err := source.OpenHTTPFS(ctx, d.Chain[0].URL.String(), c.HTTPOptions(), c.log)
	if err != nil {
		return nil, err
	}
	vd, err := vmdk.OpenFS(fsys, name, vmdk.Options{MaxChainDepth: maxChain})
	if err != nil {
		return nil, refused(d, fmt.Errorf("VM %s, %s, %s: %w", d.VMName, d.Label, d.Chain[0].Path, err))
	}
	if err := sameChain(d, vd); err != nil {
		vd.Close()
		return nil, err
	}
	if vd.Size() != d.CapacityBytes {
		vd.Close()
		return nil, tag(ErrChainBroken, "VM %s, %s: the descriptors give %d bytes, vSphere %d: the files on the datastore are not the disk vSphere describes", d.VMName, d.Label, vd.Size(), d.CapacityBytes)
	}
	return vd, nil
}

// sameChain checks that the descriptors link the files vSphere named.
func sameChain(d *Disk, vd *vmdk.Disk) error {
	var got []string
	for l := vd; l != nil; l = l.Parent() {
		if err := l.ChainError(); err != nil {
			return fmt.Errorf("VM %s, %s: %s: %w", d.VMName, d.Label, l.Path(), err)
		}
		got = append(got, path.Clean(l.Path()))
	}
	ok := len(got) == len(d.Chain)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i] == path.Base(datastoreFile(d.Chain[i].Path))
	}
	if !ok {
		return tag(ErrChainBroken, "VM %s, %s: the descriptors link %v, but vSphere names the chain %s: the files on the datastore are not the disk vSphere describes", d.VMName, d.Label, got, chainString(d.Chain))
	}
	return nil
}

// refused says what the host's refusal of a chain's file means. The SDK
// took the credentials, so a 403 from /folder while the VM is not off is
// the host holding the file open (ESXi locks what a running VM has open)
// rather than a bad password: transient, with the ways around it.
func refused(d *Disk, err error) error {
	if d.PowerState == types.VirtualMachinePowerStatePoweredOff || !errors.Is(err, source.ErrUnauthorized) {
		return err
	}
	return &tagged{err: fmt.Errorf("%w: the host will not serve the file while VM %s is %s (it holds the chain open): power the VM off, or use --vsphere-transport %s, which exports the snapshot", err, d.VMName, d.PowerState, jobapi.TransportNFC), tag: ErrInUse}
}

// CopyRefused says what the host's refusal of a chain's file during the
// copy means (err is the copy's error; any other passes as it is). The SDK
// took the credentials and the chain opened with them, so a refusal now
// is no bad password: a 403 is most likely the VM powered on mid-copy
// (ESXi locks the files a running VM has open), which Recheck confirms
// when it can; a 401 is the session ended (expired, or logged out
// elsewhere). Both are transient: a new attempt logs in and reads the
// disk whole again.
func CopyRefused(ctx context.Context, c *Client, d *Disk, err error) error {
	var st *source.HTTPStatusError
	if err == nil || errors.Is(err, ErrInUse) || !errors.As(err, &st) || (st.Code != 401 && st.Code != 403) {
		return err
	}
	if st.Code == 401 {
		return &tagged{err: fmt.Errorf("%w: the host no longer takes the SDK session it took when the copy began (it expired, or was logged out): import again", err), tag: ErrTransient}
	}
	if rerr := Recheck(ctx, c, d); errors.Is(rerr, ErrInUse) {
		return &tagged{err: fmt.Errorf("%v (the host then refused a file of the chain: %v)", rerr, err), tag: ErrInUse}
	}
	if d.Snapshot != nil {
		// A running VM locks only its top, which no snapshot's chain
		// holds: a frozen link refused is most likely being merged.
		return &tagged{err: fmt.Errorf("%w: the host refused a file of snapshot %s's chain mid-copy, after serving it: most likely the snapshot is being deleted or consolidated (which locks its files); import again", err, d.SnapshotName), tag: ErrInUse}
	}
	return &tagged{err: fmt.Errorf("%w: the host refused a file of VM %s's chain mid-copy, after serving it: most likely the VM was powered on (ESXi locks a running VM's files); import again once it is off, or import a snapshot", err, d.VMName), tag: ErrInUse}
}
