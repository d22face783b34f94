package vsphere

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/imager/internal/source"
)

// sim is an in-process vcsim over TLS with one user, alice.
type sim struct {
	m       *simulator.Model
	s       *simulator.Server
	url     string // the SDK's URL, without credentials
	creds   string // a credentials dir: username, password
	sha1    string // the certificate's thumbprints, aabb... (no colons)
	sha256  string
	caFile  string
	address string
}

const simUser, simPass = "alice", "s3cret"

func newSim(t *testing.T, m *simulator.Model) *sim {
	t.Helper()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Remove)
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{User: url.UserPassword(simUser, simPass)}
	s := m.Service.NewServer()
	t.Cleanup(s.Close)
	u := *s.URL
	u.User = nil
	cert := s.Certificate()
	s1, s256 := sha1.Sum(cert.Raw), sha256.Sum256(cert.Raw)
	caFile, err := s.CertificateFile()
	if err != nil {
		t.Fatal(err)
	}
	return &sim{m: m, s: s, url: u.String(), creds: credsDir(t, simUser, simPass), sha1: hex.EncodeToString(s1[:]), sha256: hex.EncodeToString(s256[:]), caFile: caFile, address: u.Host}
}

func credsDir(t *testing.T, user, pass string) string {
	d := t.TempDir()
	for name, v := range map[string]string{"username": user, "password": pass + "\n"} {
		if err := os.WriteFile(filepath.Join(d, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func (s *sim) options() Options {
	return Options{URL: s.url, Thumbprint: s.sha256, HTTP: source.HTTPOptions{CredsDir: s.creds, Connections: 2, Retries: 1}}
}

func (s *sim) connect(t *testing.T) *Client {
	t.Helper()
	c, err := Connect(context.Background(), s.options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// vm is the simulator's VM at an inventory path.
func (s *sim) vm(t *testing.T, c *Client, path string) *object.VirtualMachine {
	t.Helper()
	vm, err := find.NewFinder(c.Vim, false).VirtualMachine(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

func powerOff(t *testing.T, vm *object.VirtualMachine) {
	t.Helper()
	ctx := context.Background()
	task, err := vm.PowerOff(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func snapshot(t *testing.T, vm *object.VirtualMachine, name string) types.ManagedObjectReference {
	t.Helper()
	ctx := context.Background()
	task, err := vm.CreateSnapshot(ctx, name, "", false, false)
	if err != nil {
		t.Fatal(err)
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.Result.(types.ManagedObjectReference)
}

// datastore is the simulator's datastore name: its reference and the
// local directory its /folder API serves.
func (s *sim) datastore(t *testing.T, c *Client, name string) (types.ManagedObjectReference, string) {
	t.Helper()
	f := find.NewFinder(c.Vim, true)
	dc, err := f.DefaultDatacenter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.SetDatacenter(dc)
	ds, err := f.Datastore(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	obj := s.m.Map().Get(ds.Reference()).(*simulator.Datastore)
	return ds.Reference(), obj.Summary.Url
}

// edit changes a simulated object under its lock, as the simulator's own
// methods do.
func (s *sim) edit(ref types.ManagedObjectReference, f func(obj mo.Reference)) {
	obj := s.m.Map().Get(ref)
	s.m.Map().WithLock(s.m.Service.Context, obj, func() { f(obj) })
}

// setDisks makes the VM's (or snapshot's) virtual disks the ones given,
// keeping its other devices.
func (s *sim) setDisks(ref types.ManagedObjectReference, disks ...*types.VirtualDisk) {
	s.edit(ref, func(obj mo.Reference) {
		var cfg *types.VirtualMachineConfigInfo
		switch o := obj.(type) {
		case *simulator.VirtualMachine:
			cfg = o.Config
		case *simulator.VirtualMachineSnapshot:
			cfg = &o.Config
		}
		var devs []types.BaseVirtualDevice
		for _, d := range cfg.Hardware.Device {
			if _, ok := d.(*types.VirtualDisk); !ok {
				devs = append(devs, d)
			}
		}
		for _, d := range disks {
			devs = append(devs, d)
		}
		cfg.Hardware.Device = devs
	})
}

// disk is a virtual disk with the key, label and capacity given.
func disk(key int32, label string, capacity int64, b types.BaseVirtualDeviceBackingInfo) *types.VirtualDisk {
	d := &types.VirtualDisk{CapacityInBytes: capacity, CapacityInKB: capacity / 1024}
	d.Key = key
	d.DeviceInfo = &types.Description{Label: label, Summary: "disk"}
	d.Backing = b
	return d
}

// flatChain is a FlatVer2 backing chain of the files (top first) in dir
// of datastore ds.
func flatChain(dsName string, ds types.ManagedObjectReference, dir string, names ...string) *types.VirtualDiskFlatVer2BackingInfo {
	var top, prev *types.VirtualDiskFlatVer2BackingInfo
	for _, n := range names {
		b := &types.VirtualDiskFlatVer2BackingInfo{}
		b.FileName = "[" + dsName + "] " + dir + "/" + n
		b.Datastore = &ds
		b.DiskMode = string(types.VirtualDiskModePersistent)
		if prev == nil {
			top = b
		} else {
			prev.Parent = b
		}
		prev = b
	}
	return top
}
