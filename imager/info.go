package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vmdkpop/vmdkpop/imager/jobapi"
	"github.com/vmdkpop/vmdkpop/vmdk"
)

// infoJSON is `imager info --output=json`. CIDs are 8 lowercase hex digits.
type infoJSON struct {
	Filename       string       `json:"filename"`
	Format         string       `json:"format"`
	VirtualSize    int64        `json:"virtualSize"`
	AllocatedBytes int64        `json:"allocatedBytes"`
	CreateType     string       `json:"createType"`
	CID            string       `json:"cid"`
	ParentCID      string       `json:"parentCID"`
	BackingFile    string       `json:"backingFile,omitempty"`
	ChainError     string       `json:"chainError,omitempty"`
	HeaderVersion  uint32       `json:"headerVersion,omitempty"`
	HeaderFlags    uint32       `json:"headerFlags,omitempty"`
	ClusterSize    int64        `json:"clusterSize,omitempty"`
	AdapterType    string       `json:"adapterType,omitempty"`
	DDB            []kvJSON     `json:"ddb,omitempty"`
	Extents        []extentJSON `json:"extents"`
	BackingChain   []infoJSON   `json:"backingChain,omitempty"`
}

type kvJSON struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type extentJSON struct {
	Access     string `json:"access"`
	Type       string `json:"type"`
	Format     string `json:"format"`
	Start      int64  `json:"start"`
	Size       int64  `json:"size"`
	Filename   string `json:"filename,omitempty"`
	Offset     int64  `json:"offset,omitempty"`
	GrainSize  int64  `json:"grainSize,omitempty"`
	Compressed bool   `json:"compressed,omitempty"`
}

func runInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseInfo(args)
	if err != nil {
		return err
	}
	c.paths.start(ctx, stderr)
	if isURL(c.path) {
		return c.remote(stdout)
	}
	if c.resultFile != "" {
		if err := withResult("info", c.resultFile, c.path, &c.paths, nil); err != nil {
			return err
		}
	}
	d, err := vmdk.Open(c.path, c.paths.options())
	if err != nil {
		return err
	}
	defer d.Close()
	return c.print(stdout, d)
}

// remote describes a VMDK at an http(s) URL: opened once, in place, for
// both the result and the output.
func (c *infoCommand) remote(stdout io.Writer) error {
	d, err := openRemoteVMDK(c.path, &c.paths)
	if err == nil {
		defer d.Close()
	}
	if c.resultFile != "" {
		var r jobapi.Result
		if err == nil {
			r.VirtualSize, r.AllocatedBytes, r.CreateType = d.Size(), d.AllocatedBytes(), d.CreateType()
			r.CID, r.ParentCID = fmt.Sprintf("%08x", d.CID()), fmt.Sprintf("%08x", d.ParentCID())
			r.SourceFormat = "vmdk"
		}
		code := settle(&r, err, "described "+jobapi.RedactURL(c.path))
		if werr := jobapi.Write(c.resultFile, &r); werr != nil && err == nil {
			return fmt.Errorf("result file: %w", werr)
		}
		if code != 0 {
			return &exitError{code: code, msg: fmt.Sprintf("imager info: %v", err)}
		}
	}
	if err != nil {
		return err
	}
	return c.print(stdout, d)
}

// print writes what d holds, as --output and --backing-chain ask.
func (c *infoCommand) print(stdout io.Writer, d *vmdk.Disk) error {
	info := describe(d)
	if c.chain {
		for p := d.Parent(); p != nil; p = p.Parent() {
			info.BackingChain = append(info.BackingChain, describe(p))
		}
	}
	if c.output == "json" {
		return writeJSON(stdout, info)
	}
	printInfo(stdout, info)
	for _, p := range info.BackingChain {
		fmt.Fprintln(stdout)
		printInfo(stdout, p)
	}
	return nil
}

// infoCommand is what info's command line asks for.
type infoCommand struct {
	path, resultFile string
	output           outputFlag
	chain            bool
	paths            pathFlags
}

// parseInfo reads info's command line; its errors are usage errors.
func parseInfo(args []string) (*infoCommand, error) {
	c := &infoCommand{}
	fs := flag.NewFlagSet("info", flag.ContinueOnError)
	output := outputVar(fs)
	fs.BoolVar(&c.chain, "backing-chain", false, "also describe every backing image")
	resultFile := resultFlag(fs)
	c.paths.register(fs)
	c.paths.registerRemote(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return nil, err
	}
	c.path, c.resultFile, c.output = pos[0], *resultFile, *output
	return c, nil
}

func describe(d *vmdk.Disk) infoJSON {
	desc := d.Descriptor()
	info := infoJSON{
		Filename:       d.Path(),
		Format:         "vmdk",
		VirtualSize:    d.Size(),
		AllocatedBytes: d.AllocatedBytes(),
		CreateType:     d.CreateType(),
		CID:            fmt.Sprintf("%08x", d.CID()),
		ParentCID:      fmt.Sprintf("%08x", d.ParentCID()),
		BackingFile:    d.ParentFileNameHint(),
		AdapterType:    desc.DDBValue("ddb.adapterType"),
		Extents:        []extentJSON{},
	}
	if err := d.ChainError(); err != nil {
		info.ChainError = err.Error()
	}
	if h := d.Header(); h != nil {
		info.HeaderVersion, info.HeaderFlags = h.Version, h.Flags
		info.ClusterSize = int64(h.GrainSize) * vmdk.SectorSize
	}
	for _, kv := range desc.DDB {
		info.DDB = append(info.DDB, kvJSON{kv.Key, kv.Value})
	}
	for _, e := range d.Extents() {
		info.Extents = append(info.Extents, extentJSON{
			Access: string(e.Access), Type: string(e.Type), Format: e.Format,
			Start: e.Start, Size: e.Size, Filename: e.File, Offset: e.Offset,
			GrainSize: e.GrainSize, Compressed: e.Compressed,
		})
	}
	return info
}

func printInfo(w io.Writer, i infoJSON) {
	fmt.Fprintf(w, "image: %s\n", i.Filename)
	fmt.Fprintf(w, "file format: %s\n", i.Format)
	fmt.Fprintf(w, "virtual size: %s (%d bytes)\n", humanSize(i.VirtualSize), i.VirtualSize)
	fmt.Fprintf(w, "disk size: %s\n", humanSize(i.AllocatedBytes))
	if i.ClusterSize > 0 {
		fmt.Fprintf(w, "cluster_size: %d\n", i.ClusterSize)
	}
	if i.BackingFile != "" {
		fmt.Fprintf(w, "backing file: %s\n", i.BackingFile)
	}
	fmt.Fprintf(w, "create type: %s\ncid: %s\nparent cid: %s\n", i.CreateType, i.CID, i.ParentCID)
	if i.AdapterType != "" {
		fmt.Fprintf(w, "adapter type: %s\n", i.AdapterType)
	}
	if i.ChainError != "" {
		fmt.Fprintf(w, "chain error: %s\n", i.ChainError)
	}
	fmt.Fprintln(w, "extents:")
	for n, e := range i.Extents {
		fmt.Fprintf(w, "    [%d]: %s %s %s, %d bytes at %d", n, e.Access, e.Type, e.Format, e.Size, e.Start)
		if e.Filename != "" {
			fmt.Fprintf(w, ", file %s", e.Filename)
		}
		if e.Compressed {
			fmt.Fprint(w, ", compressed")
		}
		fmt.Fprintln(w)
	}
}

func humanSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, u := float64(n), 0
	for v >= 1024 && u < len(units)-1 {
		v, u = v/1024, u+1
	}
	if u == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.3g %s", v, units[u])
}
