package main

import (
	"slices"
	"strings"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// vmdkOptions are qemu-img's -o options for vmdk output.
type vmdkOptions struct {
	subformat vmdk.Subformat
	zeroed    bool
	image     vmdk.ImageOptions
}

func (o vmdkOptions) create(size int64, backing string, pf *pathFlags) vmdk.CreateOptions {
	o.image.Size = size
	c := vmdk.CreateOptions{ImageOptions: o.image, Subformat: o.subformat, ZeroedGrains: o.zeroed, Backing: backing}
	if pf != nil {
		c.BackingOptions = pf.options()
	}
	return c
}

// optionList collects repeated -o flags, each a comma-separated list.
type optionList []string

func (l *optionList) String() string { return strings.Join(*l, ",") }
func (l *optionList) Set(s string) error {
	*l = append(*l, strings.Split(s, ",")...)
	return nil
}

// subformats and adapterTypes are the values vmdk.Create takes: checked
// here too, so a bad -o is a usage error before any work, not a failure
// while creating the output.
var (
	subformats   = []string{string(vmdk.MonolithicSparse), string(vmdk.MonolithicFlat), string(vmdk.TwoGbMaxExtentSparse), string(vmdk.TwoGbMaxExtentFlat), string(vmdk.StreamOptimized)}
	adapterTypes = []string{"ide", "lsilogic", "buslogic", "legacyESX", "pvscsi"}
)

// parseVMDKOptions reads -o values; its errors are usage errors.
func parseVMDKOptions(list optionList) (vmdkOptions, error) {
	o := vmdkOptions{subformat: vmdk.MonolithicSparse}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return o, usagef("-o %q: want key=value", kv)
		}
		switch k {
		case "subformat":
			if !slices.Contains(subformats, v) {
				return o, usagef("-o subformat=%s: want one of %s", v, strings.Join(subformats, ", "))
			}
			o.subformat = vmdk.Subformat(v)
		case "adapter_type":
			if !slices.ContainsFunc(adapterTypes, func(a string) bool { return strings.EqualFold(a, v) }) {
				return o, usagef("-o adapter_type=%s: want one of %s", v, strings.Join(adapterTypes, ", "))
			}
			o.image.AdapterType = v
		case "hwversion", "toolsversion":
			if v == "" || strings.Trim(v, "0123456789") != "" || len(v) > 10 {
				return o, usagef("-o %s=%s: want a number", k, v)
			}
			if k == "hwversion" {
				o.image.HWVersion = v
			} else {
				o.image.ToolsVersion = v
			}
		case "zeroed_grain":
			if v != "on" && v != "off" {
				return o, usagef("-o zeroed_grain=%s: want on or off", v)
			}
			o.zeroed = v == "on"
		default:
			return o, usagef("-o %s: unknown option (want subformat, adapter_type, hwversion, toolsversion, zeroed_grain)", k)
		}
	}
	if o.zeroed && (o.flat() || o.subformat == vmdk.StreamOptimized) {
		return o, usagef("-o zeroed_grain=on: needs a sparse subformat, not %s", o.subformat)
	}
	return o, nil
}

// flat: the subformat's extents are flat (no grains).
func (o vmdkOptions) flat() bool {
	return o.subformat == vmdk.MonolithicFlat || o.subformat == vmdk.TwoGbMaxExtentFlat
}
