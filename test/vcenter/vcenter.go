// Package vcenter runs a simulated vCenter or ESXi host (govmomi's vcsim,
// VMware's own simulator) holding VMs whose disks are real ESXi backing
// chains, for imager's vSphere tests and the e2e (hack/vcsim).
//
// Start builds every VM as ESXi would have left it: the chain's files
// (a thin vmfs base, then a seSparse or vmfsSparse delta per snapshot,
// written by vmdk/vmdktest) are uploaded through the simulator's /folder
// API; the VM's disk is pointed at the base, a snapshot is taken, the disk
// is pointed at the next delta (its Parent the chain below), and so on.
// vcsim copies the device config into each snapshot, so snapshot sK names
// the chain frozen at sK and the VM's current backing is the whole chain.
// Start reads every backing back through the property collector and fails
// if vcsim did not keep what was set.
//
// What the fixture adds to vcsim, because clients depend on it:
//   - /folder requires credentials, as ESXi does: basic auth with the
//     fixture's user, or the vmware_soap_session cookie of a live SDK
//     session, checked at each request (one logged out no longer
//     opens it; vcsim itself serves /folder to anyone);
//   - a running VM holds the top link of each disk (the one it writes):
//     /folder refuses it with 403, as hostd cannot lock it; the power
//     state is read at each request, so a VM powered on mid-read is
//     refused from then on, and served again once powered off;
//   - ExportVm, which vcsim lacks, exports a powered-off VM's disks and
//     refuses a running VM (InvalidPowerState), as ESXi does;
//   - an NFC export (ExportSnapshot, ExportVm) streams each disk as of the snapshot
//     as a streamOptimized VMDK, as ESXi does (vcsim sends the top link's
//     descriptor file as it is); CutNFCExport breaks one half-way and
//     LeaseOpen says whether a client completed or aborted its lease;
//   - a certificate of its own (ECDSA, valid for the listen address), so
//     both a thumbprint and a CA file can be tested.
//
// Like net/http/httptest it is test support; production code never
// imports it.
package vcenter

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/simulator"
)

// Options shape the simulated inventory. The zero value is a vCenter with
// the default sizes.
type Options struct {
	// ESX simulates an ESXi host reached directly (its datacenter is
	// ha-datacenter; NFC lease URLs name the host "*"), else a vCenter.
	ESX bool
	// Size is the first disk's virtual size: default 8 MiB + 4 KiB (odd
	// on purpose: a partial last grain table). A multiple of 512.
	Size int64
	// Deltas is how many snapshots each VM has (each leaving a delta below
	// the VM's current link); default 2, -1 for none.
	Deltas int
	// VMFSSparse makes each disk's first delta vmfsSparse (COWD), as a
	// snapshot taken on VMFS5 is; the others are seSparse.
	VMFSSparse bool
	// Seed fixes every byte of every disk.
	Seed uint64
	// Username and Password are the only credentials accepted (default
	// "user" / "pass").
	Username, Password string
	// Listen is the host:port to serve on (default 127.0.0.1:0). The
	// address the server hands out (vcsim.server.url, NFC lease URLs) is
	// this host, so in a pod it must be the pod's IP, not 0.0.0.0.
	Listen string
}

// Fixture is a running simulator and what it holds. Its JSON (what
// hack/vcsim prints) is the description without the password and the
// disks' content.
type Fixture struct {
	URL string `json:"url"` // https://host:port/sdk
	// ThumbprintSHA1 and ThumbprintSHA256 are of the server certificate's
	// DER bytes, upper-case colon hex as vSphere shows them.
	ThumbprintSHA1   string `json:"thumbprintSHA1"`
	ThumbprintSHA256 string `json:"thumbprintSHA256"`
	// CertPEM is the certificate, for --ca-file (in JSON, base64).
	CertPEM  []byte `json:"certPEM"`
	Username string `json:"username"`
	Password string `json:"-"`
	// Datacenter and Datastore are the names /folder URLs take
	// (dcPath=Datacenter&dsName=Datastore).
	Datacenter string `json:"datacenter"`
	Datastore  string `json:"datastore"`
	// DatastoreDir is the local directory holding the datastore's files.
	DatastoreDir string `json:"-"`
	// VMs: a powered-off VM, then a running one, with the same chain
	// layout (different content).
	VMs []VM `json:"vms"`

	model  *simulator.Model
	server *simulator.Server
	admin  *govmomi.Client
	folder *folderAuth
	nfc    *nfcExports
	client *http.Client
	once   sync.Once

	clientOnce sync.Once
}

// VM is one virtual machine of the fixture.
type VM struct {
	Name          string `json:"name"`
	UUID          string `json:"uuid"`          // BIOS UUID (config.uuid)
	InstanceUUID  string `json:"instanceUuid"`  // config.instanceUuid
	MoRef         string `json:"moref"`         // vm-42
	InventoryPath string `json:"inventoryPath"` // /DC0/vm/<name>
	Running       bool   `json:"running"`
	// Dir is the VM's directory on the datastore.
	Dir string `json:"dir"`
	// Disks are the VM's virtual disks as they are now, in device order.
	Disks []Disk `json:"disks"`
	// Snapshots are the VM's snapshots, oldest first (s1, s2, ...), each
	// the child of the one before.
	Snapshots []Snapshot `json:"snapshots"`
}

// Snapshot is one snapshot of a VM.
type Snapshot struct {
	Name  string `json:"name"`  // s1, s2, ...
	MoRef string `json:"moref"` // snapshot-12
	// Disks are the VM's disks as of the snapshot, in device order.
	Disks []Disk `json:"disks"`
}

// Disk is a virtual disk at one point (the VM now, or a snapshot).
type Disk struct {
	Label string `json:"label"` // "Hard disk 1"
	Key   int32  `json:"key"`   // the device key
	// Files are the backing chain's descriptors as the backing names them
	// (datastore paths, "[LocalDS_0] vm/vm-000001.vmdk"), the top first,
	// the base last.
	Files []string `json:"files"`
	// DataFiles are every file the chain reads (each descriptor and its
	// extent), datastore paths, top first.
	DataFiles []string `json:"dataFiles"`
	// Capacity is the disk's size in bytes.
	Capacity int64 `json:"capacity"`
	// SHA256 is the hex SHA-256 of the disk's raw content.
	SHA256 string `json:"sha256"`
	// Content is the raw content, byte for byte (the chain's model).
	Content io.ReaderAt `json:"-"`
}

// Bytes returns the disk's raw content (Capacity bytes).
func (d Disk) Bytes() ([]byte, error) {
	p := make([]byte, d.Capacity)
	n, err := d.Content.ReadAt(p, 0)
	if n == len(p) {
		return p, nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return nil, err
}

// ErrSetup is what Start returns when the simulator did not end up
// holding what was set up (a backing vcsim did not keep, for one).
var ErrSetup = errors.New("vcenter: simulator setup")

// Close stops the simulator and removes its datastore.
func (f *Fixture) Close() {
	f.once.Do(func() {
		if f.admin != nil {
			_ = f.admin.Logout(context.Background())
		}
		if f.client != nil {
			f.client.CloseIdleConnections()
		}
		if f.server != nil {
			f.server.Close()
		}
		if f.model != nil {
			f.model.Remove()
		}
	})
}

// HTTPClient returns a client that trusts the fixture's certificate
// (and nothing else), the one the fixture uploads with.
func (f *Fixture) HTTPClient() *http.Client {
	f.clientOnce.Do(func() {
		f.client = &http.Client{Transport: &http.Transport{TLSClientConfig: f.tlsClientConfig(), ForceAttemptHTTP2: false}}
	})
	return f.client
}
