package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// mapJSON follows `qemu-img map --output=json`, plus file and compressed.
type mapJSON struct {
	Start      int64  `json:"start"`
	Length     int64  `json:"length"`
	Depth      int    `json:"depth"`
	Present    bool   `json:"present"`
	Zero       bool   `json:"zero"`
	Data       bool   `json:"data"`
	Offset     *int64 `json:"offset,omitempty"`
	File       string `json:"file,omitempty"`
	Compressed bool   `json:"compressed,omitempty"`
	NoAccess   bool   `json:"noaccess,omitempty"`
}

func runMap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("map", flag.ContinueOnError)
	output := outputVar(fs)
	var pf pathFlags
	pf.register(fs)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	d, err := vmdk.Open(pos[0], pf.options())
	if err != nil {
		return err
	}
	defer d.Close()
	ms, err := d.Map(ctx)
	if err != nil {
		return err
	}
	if *output == "human" {
		fmt.Fprintf(stdout, "%-20s%-20s%-20s%s\n", "Offset", "Length", "Mapped to", "File")
		for _, m := range ms {
			if m.Data && m.HostOffset >= 0 {
				fmt.Fprintf(stdout, "%#-20x%#-20x%#-20x%s\n", m.Offset, m.Length, m.HostOffset, m.File)
			} else if m.Data {
				fmt.Fprintf(stdout, "%#-20x%#-20x%-20s%s\n", m.Offset, m.Length, "compressed", m.File)
			}
		}
		return nil
	}
	out := make([]mapJSON, 0, len(ms))
	for _, m := range ms {
		j := mapJSON{Start: m.Offset, Length: m.Length, Depth: m.Depth, Present: m.Allocated,
			Zero: m.Zero, Data: m.Data, File: m.File, Compressed: m.Compressed, NoAccess: m.NoAccess}
		if m.HostOffset >= 0 {
			off := m.HostOffset
			j.Offset = &off
		}
		out = append(out, j)
	}
	return writeJSON(stdout, out)
}
