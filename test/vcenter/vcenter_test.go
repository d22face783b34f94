package vcenter

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// Two fixtures serve every test: a vCenter with seSparse deltas, and an
// ESXi host whose first deltas are vmfsSparse (COWD). Each is started once
// (Start is the slow part) and never changed by a test.
var fixtures = map[string]*fixtureOnce{
	"vCenter":              {o: Options{Seed: 7}},
	"ESXi with vmfsSparse": {o: Options{ESX: true, VMFSSparse: true, Seed: 8, Username: "root", Password: "vmware!"}},
}

type fixtureOnce struct {
	o    Options
	once sync.Once
	f    *Fixture
	err  error
}

func fixture(t *testing.T, name string) *Fixture {
	t.Helper()
	fo := fixtures[name]
	fo.once.Do(func() { fo.f, fo.err = Start(context.Background(), fo.o) })
	if fo.err != nil {
		t.Fatalf("%s: %v", name, fo.err)
	}
	return fo.f
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, fo := range fixtures {
		if fo.f != nil {
			fo.f.Close()
		}
	}
	os.Exit(code)
}

func eachFixture(t *testing.T, test func(t *testing.T, f *Fixture)) {
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range fixtures {
			if !yield(k) {
				return
			}
		}
	}) {
		t.Run(name, func(t *testing.T) { test(t, fixture(t, name)) })
	}
}

func login(ctx context.Context, f *Fixture, user, password string) (*govmomi.Client, error) {
	u, err := url.Parse(f.URL)
	if err != nil {
		return nil, err
	}
	u.User = url.UserPassword(user, password)
	return govmomi.NewClient(ctx, u, true)
}

// chain walks a disk's backing chain by Parent, as a resolver does.
func chain(t *testing.T, b types.BaseVirtualDeviceBackingInfo) []string {
	t.Helper()
	var out []string
	for b != nil {
		fb, ok := b.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			t.Fatalf("backing %T, want a FlatVer2 chain", b)
		}
		out = append(out, fb.FileName)
		if fb.Parent == nil {
			break
		}
		b = fb.Parent
	}
	return out
}

func checkDevices(t *testing.T, what string, devices []types.BaseVirtualDevice, want []Disk) {
	t.Helper()
	disks := object.VirtualDeviceList(devices).SelectByType((*types.VirtualDisk)(nil))
	if len(disks) != len(want) {
		t.Fatalf("%s: %d disks, the fixture says %d", what, len(disks), len(want))
	}
	for i, d := range disks {
		vd := d.(*types.VirtualDisk)
		w := want[i]
		if label := vd.DeviceInfo.GetDescription().Label; label != w.Label || vd.Key != w.Key || vd.CapacityInBytes != w.Capacity {
			t.Errorf("%s: disk %d is %q key %d capacity %d, the fixture says %q key %d capacity %d",
				what, i, label, vd.Key, vd.CapacityInBytes, w.Label, w.Key, w.Capacity)
		}
		if got := chain(t, vd.Backing); !slices.Equal(got, w.Files) {
			t.Errorf("%s: %s's backing chain is %q, the fixture says %q", what, w.Label, got, w.Files)
		}
	}
}

// What a client resolving the VMs through govmomi finds is what the
// fixture reports: the VM by each selector, its disks' backing chains
// now and at each snapshot, its power state.
func TestBackingsAsAClientFindsThem(t *testing.T) {
	eachFixture(t, func(t *testing.T, f *Fixture) {
		ctx := context.Background()
		c, err := login(ctx, f, f.Username, f.Password)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Logout(ctx)
		if len(f.VMs) != 2 || f.VMs[0].Running || !f.VMs[1].Running {
			t.Fatalf("VMs: want a powered-off and a running one, got %+v", f.VMs)
		}
		si := object.NewSearchIndex(c.Client)
		finder := find.NewFinder(c.Client, false)
		for _, vm := range f.VMs {
			t.Run(vm.Name, func(t *testing.T) {
				byBIOS, err := si.FindByUuid(ctx, nil, vm.UUID, true, types.NewBool(false))
				if err != nil || byBIOS == nil {
					t.Fatalf("by BIOS UUID %s: %v %v", vm.UUID, byBIOS, err)
				}
				byInstance, err := si.FindByUuid(ctx, nil, vm.InstanceUUID, true, types.NewBool(true))
				if err != nil || byInstance == nil {
					t.Fatalf("by instance UUID %s: %v %v", vm.InstanceUUID, byInstance, err)
				}
				byPath, err := finder.VirtualMachine(ctx, vm.InventoryPath)
				if err != nil {
					t.Fatalf("by path %s: %v", vm.InventoryPath, err)
				}
				for _, ref := range []types.ManagedObjectReference{byBIOS.Reference(), byInstance.Reference(), byPath.Reference()} {
					if ref.Value != vm.MoRef {
						t.Fatalf("found %s, the fixture says %s", ref.Value, vm.MoRef)
					}
				}
				obj := object.NewVirtualMachine(c.Client, byPath.Reference())
				var mvm mo.VirtualMachine
				if err := obj.Properties(ctx, obj.Reference(), []string{"name", "config.hardware.device", "runtime.powerState"}, &mvm); err != nil {
					t.Fatal(err)
				}
				if mvm.Name != vm.Name || (mvm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn) != vm.Running {
					t.Errorf("%s %s, the fixture says %s running=%v", mvm.Name, mvm.Runtime.PowerState, vm.Name, vm.Running)
				}
				checkDevices(t, "now", mvm.Config.Hardware.Device, vm.Disks)
				if len(vm.Snapshots) != 2 {
					t.Fatalf("%d snapshots, want the default 2", len(vm.Snapshots))
				}
				for k, s := range vm.Snapshots {
					ref, err := obj.FindSnapshot(ctx, s.Name)
					if err != nil || ref.Value != s.MoRef {
						t.Fatalf("snapshot %s: %v %v, the fixture says %s", s.Name, ref, err, s.MoRef)
					}
					var ms mo.VirtualMachineSnapshot
					if err := obj.Properties(ctx, *ref, []string{"config.hardware.device"}, &ms); err != nil {
						t.Fatal(err)
					}
					checkDevices(t, s.Name, ms.Config.Hardware.Device, s.Disks)
					// s(k+1) froze the base under k deltas.
					if n := len(s.Disks[0].Files); n != k+1 {
						t.Errorf("%s: a chain of %d links, want %d", s.Name, n, k+1)
					}
				}
				if n := len(vm.Disks[0].Files); n != 3 {
					t.Errorf("now: a chain of %d links, want 3", n)
				}
			})
		}
	})
}

// rangeGET fetches a whole file through /folder in odd-sized ranges,
// checking each reply is the range asked for.
func rangeGET(t *testing.T, f *Fixture, dsPath string) []byte {
	t.Helper()
	const piece = 1<<20 - 3
	var out []byte
	for {
		req, err := http.NewRequest(http.MethodGet, f.FolderURL(dsPath), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(f.Username, f.Password)
		start := int64(len(out))
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", start, start+piece-1))
		resp, err := f.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && start > 0 {
			return out
		}
		if resp.StatusCode != http.StatusPartialContent {
			t.Fatalf("GET %s range from %d: %s", dsPath, start, resp.Status)
		}
		var a, b, size int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &a, &b, &size); err != nil || a != start || b-a+1 != int64(len(body)) {
			t.Fatalf("GET %s range from %d: Content-Range %q for %d bytes", dsPath, start, resp.Header.Get("Content-Range"), len(body))
		}
		out = append(out, body...)
		if int64(len(out)) == size {
			return out
		}
	}
}

func sha256Hex(p []byte) string {
	s := sha256.Sum256(p)
	return hex.EncodeToString(s[:])
}

// The expected content of every disk, now and at each snapshot, is what
// qemu-img reads from the chain's files as /folder serves them (in
// ranges): neither the model nor the upload can be wrong unnoticed.
func TestFolderChainsReadAsTheModelByQemu(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img is needed: it is the independent reader the model is checked against")
	}
	eachFixture(t, func(t *testing.T, f *Fixture) {
		vm := f.VMs[0] // powered off: every link readable
		points := map[string][]Disk{"now": vm.Disks}
		for _, s := range vm.Snapshots {
			points[s.Name] = s.Disks
		}
		for name, disks := range points {
			for _, d := range disks {
				dir := t.TempDir()
				for _, file := range d.DataFiles {
					if err := os.WriteFile(filepath.Join(dir, path.Base(file)), rangeGET(t, f, file), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				var top object.DatastorePath
				top.FromString(d.Files[0])
				raw := filepath.Join(dir, "disk.raw")
				if out, err := exec.Command("qemu-img", "convert", "-f", "vmdk", "-O", "raw", filepath.Join(dir, path.Base(top.Path)), raw).CombinedOutput(); err != nil {
					t.Fatalf("%s %s: qemu-img: %v: %s", name, d.Label, err, out)
				}
				got, err := os.ReadFile(raw)
				if err != nil {
					t.Fatal(err)
				}
				model, err := d.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				if int64(len(got)) != d.Capacity || sha256Hex(got) != d.SHA256 || sha256Hex(model) != d.SHA256 {
					t.Errorf("%s %s: qemu-img reads %d bytes sha256 %s, the model %s, the fixture says %d bytes %s",
						name, d.Label, len(got), sha256Hex(got), sha256Hex(model), d.Capacity, d.SHA256)
				}
			}
		}
	})
}

// /folder asks for credentials as ESXi does (basic auth, or the cookie of
// a live SDK session) and refuses the links a running VM writes.
func TestFolderCredentialsAndLocks(t *testing.T) {
	eachFixture(t, func(t *testing.T, f *Fixture) {
		ctx := context.Background()
		c, err := login(ctx, f, f.Username, f.Password)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Logout(ctx)
		var session string
		for _, ck := range c.Client.Jar.Cookies(c.Client.URL()) {
			if ck.Name == soap.SessionCookieName {
				session = ck.Value
			}
		}
		if session == "" {
			t.Fatal("the SDK login set no session cookie")
		}
		off, on := f.VMs[0], f.VMs[1]
		for _, tc := range []struct {
			name   string
			file   string
			auth   func(*http.Request)
			status int
		}{
			{"no credentials", off.Disks[0].Files[0], func(*http.Request) {}, http.StatusUnauthorized},
			{"wrong password", off.Disks[0].Files[0], func(r *http.Request) { r.SetBasicAuth(f.Username, f.Password+"x") }, http.StatusUnauthorized},
			{"basic auth", off.Disks[0].Files[0], func(r *http.Request) { r.SetBasicAuth(f.Username, f.Password) }, http.StatusOK},
			{"SDK session cookie", off.Disks[1].DataFiles[1], func(r *http.Request) {
				r.AddCookie(&http.Cookie{Name: soap.SessionCookieName, Value: session})
			}, http.StatusOK},
			{"made-up cookie", off.Disks[0].Files[0], func(r *http.Request) {
				r.AddCookie(&http.Cookie{Name: soap.SessionCookieName, Value: "52c0ffee-0000-0000-0000-000000000000"})
			}, http.StatusUnauthorized},
			{"running VM's top descriptor", on.Disks[0].DataFiles[0], func(r *http.Request) { r.SetBasicAuth(f.Username, f.Password) }, http.StatusForbidden},
			{"running VM's top extent", on.Disks[1].DataFiles[1], func(r *http.Request) { r.SetBasicAuth(f.Username, f.Password) }, http.StatusForbidden},
			{"running VM's frozen link", on.Disks[0].DataFiles[2], func(r *http.Request) { r.SetBasicAuth(f.Username, f.Password) }, http.StatusOK},
		} {
			req, err := http.NewRequest(http.MethodGet, f.FolderURL(tc.file), nil)
			if err != nil {
				t.Fatal(err)
			}
			tc.auth(req)
			resp, err := f.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%s (%s): %s, want %d", tc.name, tc.file, resp.Status, tc.status)
			}
		}
		if _, err := login(ctx, f, f.Username, f.Password+"x"); err == nil {
			t.Error("the SDK accepted a wrong password")
		}
	})
}

// The thumbprints are those of the certificate served, as govmomi (and so
// vSphere) writes them, and each pins the server; CertPEM is a CA that
// verifies it.
func TestCertificateThumbprintsAndCA(t *testing.T) {
	f := fixture(t, "vCenter")
	ctx := context.Background()
	u, _ := url.Parse(f.URL)
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	cert := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if f.ThumbprintSHA1 != soap.ThumbprintSHA1(cert) || f.ThumbprintSHA256 != soap.ThumbprintSHA256(cert) {
		t.Fatalf("thumbprints %s / %s, the served certificate's %s / %s", f.ThumbprintSHA1, f.ThumbprintSHA256, soap.ThumbprintSHA1(cert), soap.ThumbprintSHA256(cert))
	}
	connect := func(trust func(*soap.Client) error) error {
		sc := soap.NewClient(u, false)
		if err := trust(sc); err != nil {
			return err
		}
		vc, err := vim25.NewClient(ctx, sc)
		if err != nil {
			return err
		}
		return session.NewManager(vc).Login(ctx, url.UserPassword(f.Username, f.Password))
	}
	pinned := func(tp string) func(*soap.Client) error {
		return func(sc *soap.Client) error { sc.SetThumbprint(u.Host, tp); return nil }
	}
	for _, tc := range []struct {
		name  string
		trust func(*soap.Client) error
		ok    bool
	}{
		{"SHA-1 thumbprint", pinned(f.ThumbprintSHA1), true},
		{"SHA-256 thumbprint", pinned(f.ThumbprintSHA256), true},
		{"another certificate's thumbprint", pinned(strings.Repeat("AB:", 19) + "AB"), false},
		{"nothing trusted", func(*soap.Client) error { return nil }, false},
		{"CertPEM as the CA", func(sc *soap.Client) error {
			file := filepath.Join(t.TempDir(), "ca.pem")
			if err := os.WriteFile(file, f.CertPEM, 0o644); err != nil {
				return err
			}
			return sc.SetRootCAs(file)
		}, true},
	} {
		err := connect(tc.trust)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want success %v", tc.name, err, tc.ok)
		}
	}
}

// Start fails when vcsim holds a chain other than the one set: a link
// dropped, or one of another format.
func TestCheckDisksRefusesAChainVcsimDidNotKeep(t *testing.T) {
	f := &Fixture{Datastore: "ds"}
	d, err := writeChain(t.TempDir(), "vm", "Hard disk 1", 1<<20, vmdktest.ChainOptions{Deltas: 2, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	device := func(b *types.VirtualDiskFlatVer2BackingInfo) []types.BaseVirtualDevice {
		return []types.BaseVirtualDevice{&types.VirtualDisk{
			VirtualDevice:   types.VirtualDevice{Key: 2000, DeviceInfo: &types.Description{Label: "Hard disk 1"}, Backing: b},
			CapacityInBytes: 1 << 20,
		}}
	}
	if _, err := f.checkDisks(device(f.backing("vm", d, 2)), "vm", []*chainDisk{d}, 2); err != nil {
		t.Fatalf("the chain set: %v", err)
	}
	dropped := f.backing("vm", d, 2)
	dropped.Parent = dropped.Parent.Parent
	otherFormat := f.backing("vm", d, 2)
	otherFormat.Parent.DeltaDiskFormat = string(types.VirtualDiskDeltaDiskFormatRedoLogFormat)
	baseOnly := f.backing("vm", d, 0)
	for name, b := range map[string]*types.VirtualDiskFlatVer2BackingInfo{"a link dropped": dropped, "a link's format": otherFormat, "the base alone": baseOnly} {
		if _, err := f.checkDisks(device(b), "vm", []*chainDisk{d}, 2); !errors.Is(err, ErrSetup) {
			t.Errorf("%s: err %v, want ErrSetup", name, err)
		}
	}
}
