package vcenter

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
)

// Start runs a simulator holding the fixture's VMs. Close stops it.
func Start(ctx context.Context, o Options) (_ *Fixture, err error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("vcenter: listen address %q: %w", o.Listen, err)
	}
	cert, certPEM, err := serverCert(host)
	if err != nil {
		return nil, fmt.Errorf("vcenter: server certificate: %w", err)
	}
	f := &Fixture{Username: o.Username, Password: o.Password, CertPEM: certPEM}
	f.ThumbprintSHA1, f.ThumbprintSHA256 = thumbprints(cert.Certificate[0])
	defer func() {
		if err != nil {
			f.Close()
		}
	}()

	model := simulator.VPX()
	if o.ESX {
		model = simulator.ESX()
	}
	// The fixture's VMs only: vcsim's own have empty disks.
	model.Machine = 0
	model.Autostart = false
	if err := model.Create(); err != nil {
		return nil, fmt.Errorf("vcenter: simulator model: %w", err)
	}
	f.model = model
	svc := model.Service
	svc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	// A Userinfo of our own, not simulator.DefaultLogin: with that one
	// vcsim accepts any non-empty credentials.
	svc.Listen = &url.URL{Host: o.Listen, User: url.UserPassword(o.Username, o.Password)}
	f.folder = newFolderAuth(svc, o.Username, o.Password)
	f.nfc = newNFCExports(svc)
	newExportVM(svc, vim25.Path, f.folder.admin.Load)
	f.server = svc.NewServer()
	u := *f.server.URL
	u.User = nil
	f.URL = u.String()

	login := u
	login.User = url.UserPassword(o.Username, o.Password)
	f.admin, err = govmomi.NewClient(ctx, &login, true)
	if err != nil {
		return nil, fmt.Errorf("vcenter: log in to the simulator: %w", err)
	}
	f.folder.admin.Store(f.admin.Client)

	inv, err := f.inventory(ctx)
	if err != nil {
		return nil, err
	}
	for i, spec := range []struct {
		name    string
		running bool
	}{{"vm-off", false}, {"vm-on", true}} {
		vm, err := f.buildVM(ctx, inv, vmSpec{
			name: spec.name, running: spec.running, size: o.Size, deltas: o.Deltas,
			vmfsSparse: o.VMFSSparse, seed: o.Seed + uint64(i)*1000,
		})
		if err != nil {
			return nil, fmt.Errorf("vcenter: VM %s: %w", spec.name, err)
		}
		f.VMs = append(f.VMs, *vm)
		for _, d := range vm.Disks {
			f.nfc.add(d)
		}
		for _, s := range vm.Snapshots {
			for _, d := range s.Disks {
				f.nfc.add(d)
			}
		}
	}
	return f, nil
}

func (o *Options) defaults() error {
	if o.Size == 0 {
		o.Size = 8<<20 + 4096
	}
	if o.Size < 0 || o.Size%512 != 0 {
		return fmt.Errorf("vcenter: disk size %d: a positive multiple of 512", o.Size)
	}
	switch {
	case o.Deltas == 0:
		o.Deltas = 2
	case o.Deltas < 0:
		o.Deltas = 0
	}
	if o.Username == "" {
		o.Username = "user"
	}
	if o.Password == "" {
		o.Password = "pass"
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	return nil
}

// inventory is where the fixture's VMs go.
type inventory struct {
	dc     *object.Datacenter
	folder *object.Folder // the datacenter's vm folder
	pool   *object.ResourcePool
	host   *object.HostSystem
	ds     *object.Datastore
}

func (f *Fixture) inventory(ctx context.Context) (*inventory, error) {
	finder := find.NewFinder(f.admin.Client, false)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		return nil, fmt.Errorf("vcenter: datacenter: %w", err)
	}
	finder.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		return nil, fmt.Errorf("vcenter: datacenter folders: %w", err)
	}
	hosts, err := finder.HostSystemList(ctx, "*")
	if err != nil || len(hosts) == 0 {
		return nil, fmt.Errorf("vcenter: hosts: %v: %w", err, ErrSetup)
	}
	pool, err := hosts[0].ResourcePool(ctx)
	if err != nil {
		return nil, fmt.Errorf("vcenter: host's resource pool: %w", err)
	}
	dss, err := finder.DatastoreList(ctx, "*")
	if err != nil || len(dss) == 0 {
		return nil, fmt.Errorf("vcenter: datastores: %v: %w", err, ErrSetup)
	}
	var mds mo.Datastore
	if err := dss[0].Properties(ctx, dss[0].Reference(), []string{"name", "info"}, &mds); err != nil {
		return nil, fmt.Errorf("vcenter: datastore %s: %w", dss[0].Reference(), err)
	}
	f.Datacenter = path.Base(dc.InventoryPath)
	f.Datastore = mds.Name
	f.DatastoreDir = mds.Info.GetDatastoreInfo().Url
	if st, err := os.Stat(f.DatastoreDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("vcenter: datastore %s: local directory %q: %v: %w", f.Datastore, f.DatastoreDir, err, ErrSetup)
	}
	return &inventory{dc: dc, folder: folders.VmFolder, pool: pool, host: hosts[0], ds: dss[0]}, nil
}

// DatastorePath is "[<datastore>] <name>" for name relative to the
// datastore's root.
func (f *Fixture) DatastorePath(name string) string {
	p := object.DatastorePath{Datastore: f.Datastore, Path: name}
	return p.String()
}

// LocalPath is the local file behind a datastore path of the fixture
// ("[LocalDS_0] vm-off/vm-off.vmdk"), for tests that remove or damage
// one; "" if the path is not on the fixture's datastore.
func (f *Fixture) LocalPath(dsPath string) string {
	var p object.DatastorePath
	if !p.FromString(dsPath) || p.Datastore != f.Datastore {
		return ""
	}
	return path.Join(f.DatastoreDir, path.Clean("/"+p.Path))
}

// FolderURL is the /folder URL of a datastore path of the fixture, as a
// vCenter (dcPath, dsName) or an ESXi host names it.
func (f *Fixture) FolderURL(dsPath string) string {
	var p object.DatastorePath
	p.FromString(dsPath)
	u, _ := url.Parse(f.URL)
	u.Path = "/folder/" + p.Path
	u.RawQuery = url.Values{"dcPath": {f.Datacenter}, "dsName": {p.Datastore}}.Encode()
	return u.String()
}

// FolderRequests is how many /folder requests reached a file (past the
// credential and lock checks).
func (f *Fixture) FolderRequests() int64 { return f.folder.requests.Load() }
