package vsphere

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// chainSize ends in a partial grain.
const chainSize = 2<<20 + 4096

// chainVM is a running simulated VM whose "Hard disk 1" is a real ESXi
// chain in its datastore: snapshot s1 points at the base vm.vmdk, s2 at
// vm-000001.vmdk over it, and the VM now writes vm-000002.vmdk.
// "Hard disk 2" is a flat disk added after the snapshots.
type chainVM struct {
	*sim
	c      *Client
	vm     *object.VirtualMachine
	s1, s2 types.ManagedObjectReference
	chain  *vmdktest.Chain
	ds     types.ManagedObjectReference
	dir    string // the VM's directory, on the local disk
	data   []byte // Hard disk 2's content
}

func newChainVM(t *testing.T, o vmdktest.ChainOptions) *chainVM {
	t.Helper()
	s := newSim(t, simulator.VPX())
	v := &chainVM{sim: s, c: s.connect(t)}
	v.vm = s.vm(t, v.c, "/DC0/vm/DC0_H0_VM0")
	var root string
	v.ds, root = s.datastore(t, v.c, "LocalDS_0")
	v.dir = filepath.Join(root, "chainvm")
	if err := os.MkdirAll(v.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	o.Deltas = 2
	var err error
	if v.chain, err = vmdktest.WriteESXiChain(v.dir, "vm", chainSize, o); err != nil {
		t.Fatal(err)
	}
	data := vmdktest.MixedContent(o.Seed+100, chainSize)
	if _, err := vmdktest.WriteVMFSBase(v.dir, "data", data, chainSize, vmdktest.VMFSOptions{}); err != nil {
		t.Fatal(err)
	}
	v.data = make([]byte, chainSize)
	if _, err := data.ReadAt(v.data, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	v.s1 = snapshot(t, v.vm, "s1")
	v.s2 = snapshot(t, v.vm, "s2")
	s.setDisks(v.s1, v.disk1("vm.vmdk"))
	s.setDisks(v.s2, v.disk1("vm-000001.vmdk", "vm.vmdk"))
	s.setDisks(v.vm.Reference(), v.disk1("vm-000002.vmdk", "vm-000001.vmdk", "vm.vmdk"),
		disk(2001, "Hard disk 2", chainSize, flatChain("LocalDS_0", v.ds, "chainvm", "data.vmdk")))
	return v
}

// disk1 is Hard disk 1 backed by the chain of files given, top first.
func (v *chainVM) disk1(files ...string) *types.VirtualDisk {
	return disk(2000, "Hard disk 1", chainSize, flatChain("LocalDS_0", v.ds, "chainvm", files...))
}

// content is Hard disk 1's content with the first deltas layers.
func (v *chainVM) content(t *testing.T, deltas int) []byte {
	t.Helper()
	m := *v.chain.Model
	m.Layers = m.Layers[:deltas]
	var b bytes.Buffer
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// read resolves sel and reads the disk through OpenChain.
func (v *chainVM) read(t *testing.T, sel Selector) (*Disk, []byte) {
	t.Helper()
	d, err := Resolve(context.Background(), v.c, sel)
	if err != nil {
		t.Fatal(err)
	}
	vd, err := OpenChain(context.Background(), v.c, d)
	if err != nil {
		t.Fatal(err)
	}
	defer vd.Close()
	b := make([]byte, vd.Size())
	if _, err := vd.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return d, b
}

func paths(d *Disk) string {
	var p []string
	for _, f := range d.Chain {
		p = append(p, f.Path)
	}
	return strings.Join(p, " ")
}

// The disk as of each snapshot, and as it is once the VM is off, is read
// byte for byte as the chain's model says, from the files vSphere names.
func TestResolveAndReadChain(t *testing.T) {
	for _, o := range []vmdktest.ChainOptions{{Seed: 41}, {Seed: 42, VMFSSparse: true}} {
		v := newChainVM(t, o)
		path := "/DC0/vm/DC0_H0_VM0"
		for _, tc := range []struct {
			snapshot string
			deltas   int
			chain    string
		}{
			{"s1", 0, "[LocalDS_0] chainvm/vm.vmdk"},
			{"s2", 1, "[LocalDS_0] chainvm/vm-000001.vmdk [LocalDS_0] chainvm/vm.vmdk"},
		} {
			d, got := v.read(t, Selector{InventoryPath: path, Snapshot: tc.snapshot})
			if paths(d) != tc.chain {
				t.Fatalf("%s: chain %s, want %s", tc.snapshot, paths(d), tc.chain)
			}
			if !bytes.Equal(got, v.content(t, tc.deltas)) {
				t.Fatalf("%s: the disk read differs from the model", tc.snapshot)
			}
			r := d.Result()
			if r.Snapshot != "s2 ("+v.s2.Value+")" && r.Snapshot != "s1 ("+v.s1.Value+")" || r.DiskLabel != "Hard disk 1" || r.VMName != "DC0_H0_VM0" || r.CapacityBytes != chainSize {
				t.Fatalf("%s: result %+v", tc.snapshot, r)
			}
		}
		if _, err := Resolve(context.Background(), v.c, Selector{InventoryPath: path}); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "name a snapshot") {
			t.Fatalf("running, no snapshot: %v", err)
		}
		powerOff(t, v.vm)
		d, got := v.read(t, Selector{InventoryPath: path})
		if len(d.Chain) != 3 || d.Snapshot != nil || !bytes.Equal(got, v.content(t, 2)) {
			t.Fatalf("powered off: chain %s, content equal %v", paths(d), bytes.Equal(got, v.content(t, 2)))
		}
		d, got = v.read(t, Selector{InventoryPath: path, DiskLabel: "Hard disk 2"})
		if paths(d) != "[LocalDS_0] chainvm/data.vmdk" || !bytes.Equal(got, v.data) {
			t.Fatalf("Hard disk 2: chain %s", paths(d))
		}
		d, err := Resolve(context.Background(), v.c, Selector{InventoryPath: path, DiskIndex: 1})
		if err != nil || d.Label != "Hard disk 2" || paths(d) != "[LocalDS_0] chainvm/data.vmdk" {
			t.Fatalf("disk 1: %v", err)
		}
	}
}
