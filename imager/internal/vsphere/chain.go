package vsphere

import (
	"context"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
)

// A disk's backing is a chain of files, each a delta over the next
// (Backing.Parent), down to a base: what ESXi made of the disk at each
// snapshot. The API gives every link the type of the top's backing
// (a seSparse delta's parent is a SeSparseBackingInfo even when the file
// is a flat base), so the links' formats are read from their descriptors,
// not from here; here the chain is bounded, checked to be files on a
// datastore, and given their /folder URLs.

// maxChain bounds the chain: ESXi stops at 255 links.
const maxChain = 255

// link is one backing as the API shows it.
type link struct {
	file      string
	datastore *types.ManagedObjectReference
}

// links walks a disk's backing chain, top first. A virtual-mode RDM is
// a link only for transport nfc, which exports its bytes; its file on the
// datastore is a pointer to the LUN.
func links(b types.BaseVirtualDeviceBackingInfo, transport string) ([]link, error) {
	var out []link
	seen := map[string]bool{}
	for b != nil {
		var (
			fb   *types.VirtualDeviceFileBackingInfo
			next types.BaseVirtualDeviceBackingInfo
		)
		switch v := b.(type) {
		case *types.VirtualDiskFlatVer2BackingInfo:
			fb = &v.VirtualDeviceFileBackingInfo
			if v.Parent != nil {
				next = v.Parent
			}
		case *types.VirtualDiskSeSparseBackingInfo:
			fb = &v.VirtualDeviceFileBackingInfo
			if v.Parent != nil {
				next = v.Parent
			}
		case *types.VirtualDiskSparseVer2BackingInfo:
			fb = &v.VirtualDeviceFileBackingInfo
			if v.Parent != nil {
				next = v.Parent
			}
		case *types.VirtualDiskFlatVer1BackingInfo:
			fb = &v.VirtualDeviceFileBackingInfo
			if v.Parent != nil {
				next = v.Parent
			}
		case *types.VirtualDiskSparseVer1BackingInfo:
			fb = &v.VirtualDeviceFileBackingInfo
			if v.Parent != nil {
				next = v.Parent
			}
		case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
			if v.CompatibilityMode == string(types.VirtualDiskCompatibilityModePhysicalMode) {
				return nil, tag(ErrUnsupported, "a raw device mapping in physical mode (%s, LUN %s): its bytes are the LUN's, which neither the datastore nor an NFC export serves; copy the LUN itself", v.FileName, v.LunUuid)
			}
			if transport != jobapi.TransportNFC {
				return nil, tag(ErrUnsupported, "a raw device mapping in virtual mode (%s): its file points at a LUN, not the disk's bytes; use transport %s, which exports the disk", v.FileName, jobapi.TransportNFC)
			}
			fb = &v.VirtualDeviceFileBackingInfo
			if v.Parent != nil {
				next = v.Parent
			}
		default:
			return nil, tag(ErrUnsupported, "a %T backing: not a VMDK file on a datastore", b)
		}
		if len(out) >= maxChain {
			return nil, tag(ErrChainBroken, "a backing chain of more than %d links", maxChain)
		}
		if fb.FileName == "" {
			return nil, tag(ErrChainBroken, "link %d of the backing chain names no file", len(out))
		}
		if seen[fb.FileName] {
			return nil, tag(ErrChainBroken, "the backing chain loops: %s is its own ancestor", fb.FileName)
		}
		seen[fb.FileName] = true
		out = append(out, link{file: fb.FileName, datastore: fb.Datastore})
		b = next
	}
	if len(out) == 0 {
		return nil, tag(ErrChainBroken, "the disk has no backing")
	}
	return out, nil
}

// fileName is the top file of a backing ("": none).
func fileName(b types.BaseVirtualDeviceBackingInfo) string {
	if fb, ok := b.(types.BaseVirtualDeviceFileBackingInfo); ok {
		return fb.GetVirtualDeviceFileBackingInfo().FileName
	}
	return ""
}

// datastoreInfo is what a chain needs of a datastore.
type datastoreInfo struct {
	name       string
	kind       string // VMFS, NFS, vsan, ...
	accessible bool
	dcPath     string // its datacenter's inventory path, for dcPath=
}

// chainOf is the disk's backing chain, checked for the transport that
// will read it; for transport datastore, each file has its /folder URL
// and all are in the top's directory, beside each other, as the
// descriptors' parentFileNameHint names them.
// A link's datastore is its backing's; a parent backing may leave it out
// (vcsim's do), and is then the VM's datastore of the name its path gives.
func chainOf(ctx context.Context, c *Client, disk *types.VirtualDisk, vmStores []types.ManagedObjectReference, transport string) ([]File, error) {
	ls, err := links(disk.Backing, transport)
	if err != nil {
		return nil, err
	}
	stores := map[types.ManagedObjectReference]*datastoreInfo{}
	store := func(ref types.ManagedObjectReference) (*datastoreInfo, error) {
		if ds := stores[ref]; ds != nil {
			return ds, nil
		}
		ds, err := lookupDatastore(ctx, c, ref)
		if err == nil {
			stores[ref] = ds
		}
		return ds, err
	}
	var out []File
	var topDir string
	var topDS types.ManagedObjectReference
	for i, l := range ls {
		var p object.DatastorePath
		if !p.FromString(l.file) || p.Datastore == "" {
			return nil, tag(ErrChainBroken, "%q is not a datastore path ([datastore] dir/file.vmdk)", l.file)
		}
		vsan := strings.HasPrefix(p.Path, "vsan:") || strings.Contains(p.Path, "://")
		if vsan && transport != jobapi.TransportNFC {
			return nil, vsanError(l.file)
		}
		if l.datastore == nil {
			for _, ref := range vmStores {
				ds, err := store(ref)
				if err != nil {
					return nil, err
				}
				if ds.name == p.Datastore {
					l.datastore = &ref
					break
				}
			}
			if l.datastore == nil {
				return nil, tag(ErrChainBroken, "%s: on datastore %s, which is not one of the VM's", l.file, p.Datastore)
			}
		}
		ds, err := store(*l.datastore)
		if err != nil {
			return nil, err
		}
		if strings.EqualFold(ds.kind, "vsan") && transport != jobapi.TransportNFC {
			return nil, vsanError(l.file)
		}
		if ds.name != p.Datastore {
			return nil, tag(ErrChainBroken, "%s is on datastore %s (%s), whose name is %q", l.file, p.Datastore, l.datastore.Value, ds.name)
		}
		f := File{Path: l.file, Datastore: *l.datastore}
		if transport == jobapi.TransportDatastore {
			if !ds.accessible {
				return nil, tag(ErrTransient, "datastore %s, which holds %s, is not accessible now", ds.name, l.file)
			}
			if !fs.ValidPath(p.Path) || p.Path == "." || strings.HasSuffix(p.Path, "/") {
				return nil, tag(ErrChainBroken, "%s: %q is not a file's path in the datastore", l.file, p.Path)
			}
			if i == 0 {
				topDir, topDS = path.Dir(p.Path), *l.datastore
			} else if path.Dir(p.Path) != topDir || *l.datastore != topDS {
				return nil, tag(ErrUnsupported, "the backing chain spans directories (%s is not beside %s): transport %s reads a chain whose files are in one directory; transport %s exports any", l.file, ls[0].file, jobapi.TransportDatastore, jobapi.TransportNFC)
			}
			f.URL = folderURL(c.sdk, ds, p.Path)
		}
		out = append(out, f)
	}
	return out, nil
}

func vsanError(file string) error {
	return tag(ErrUnsupported, "%s is on vSAN, whose disks are objects, not files the datastore serves: use transport %s", file, jobapi.TransportNFC)
}

// lookupDatastore reads what the chain needs of a datastore.
func lookupDatastore(ctx context.Context, c *Client, ref types.ManagedObjectReference) (*datastoreInfo, error) {
	var ds mo.Datastore
	if err := property.DefaultCollector(c.Vim).RetrieveOne(ctx, ref, []string{"summary"}, &ds); err != nil {
		return nil, sdkError(err, "datastore %s", ref.Value)
	}
	o := object.NewDatastore(c.Vim, ref)
	if err := o.FindInventoryPath(ctx); err != nil {
		return nil, sdkError(err, "datastore %s's datacenter", ds.Summary.Name)
	}
	if o.DatacenterPath == "" {
		return nil, tag(ErrChainBroken, "datastore %s is in no datacenter", ds.Summary.Name)
	}
	return &datastoreInfo{name: ds.Summary.Name, kind: ds.Summary.Type, accessible: ds.Summary.Accessible, dcPath: strings.TrimPrefix(o.DatacenterPath, "/")}, nil
}

// folderURL is the /folder URL of a file on a datastore, on the SDK's
// own host (the session is that host's): /folder/<path>?dcPath=&dsName=.
// Built here rather than by object.NewDatastoreURL, which takes its
// scheme from the environment (GOVMOMI_DATASTORE_ACCESS_SCHEME) and could
// make it http://.
func folderURL(sdk *url.URL, ds *datastoreInfo, file string) *url.URL {
	return &url.URL{
		Scheme:   "https",
		Host:     sdk.Host,
		Path:     "/folder/" + file,
		RawQuery: url.Values{"dcPath": {ds.dcPath}, "dsName": {ds.name}}.Encode(),
	}
}

// String is the chain for messages, top first.
func chainString(files []File) string {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Path
	}
	return fmt.Sprintf("[%s]", strings.Join(names, ", "))
}

// datastoreFile is the path in its datastore of "[ds] dir/file.vmdk".
func datastoreFile(p string) string {
	var dp object.DatastorePath
	dp.FromString(p)
	return dp.Path
}
