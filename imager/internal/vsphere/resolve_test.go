package vsphere

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vmware/govmomi/simulator"
)

func TestResolveRunningVMWithoutSnapshotRefused(t *testing.T) {
	s := newSim(t, simulator.VPX())
	c := s.connect(t)
	vm := s.vm(t, c, "/DC0/vm/DC0_H0_VM0")
	_, err := Resolve(context.Background(), c, Selector{InventoryPath: "/DC0/vm/DC0_H0_VM0"})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("running VM: %v", err)
	}
	powerOff(t, vm)
	d, err := Resolve(context.Background(), c, Selector{InventoryPath: "/DC0/vm/DC0_H0_VM0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v %v", d, d.Chain[0].URL)
	if !strings.Contains(d.Chain[0].URL.String(), "dsName=") {
		t.Fatal(d.Chain[0].URL)
	}
}
