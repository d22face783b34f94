package main

import (
	"bufio"
	"context"
	"encoding/json"
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
	w := bufio.NewWriter(stdout)
	if *output == "human" {
		fmt.Fprintf(w, "%-20s%-20s%-20s%s\n", "Offset", "Length", "Mapped to", "File")
		err = d.MapEach(ctx, func(m vmdk.Mapping) error {
			if m.Data && m.HostOffset >= 0 {
				fmt.Fprintf(w, "%#-20x%#-20x%#-20x%s\n", m.Offset, m.Length, m.HostOffset, m.File)
			} else if m.Data {
				fmt.Fprintf(w, "%#-20x%#-20x%-20s%s\n", m.Offset, m.Length, "compressed", m.File)
			}
			return nil
		})
	} else {
		err = streamMapJSON(ctx, w, d)
	}
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	return err
}

// streamMapJSON writes the disk's map as writeJSON would write the whole
// array, one mapping at a time: a small hostile image can have more
// mappings than fit in memory.
func streamMapJSON(ctx context.Context, w io.Writer, d *vmdk.Disk) error {
	sep := "[\n  "
	err := d.MapEach(ctx, func(m vmdk.Mapping) error {
		j := mapJSON{Start: m.Offset, Length: m.Length, Depth: m.Depth, Present: m.Allocated,
			Zero: m.Zero, Data: m.Data, File: m.File, Compressed: m.Compressed, NoAccess: m.NoAccess}
		if m.HostOffset >= 0 {
			off := m.HostOffset
			j.Offset = &off
		}
		b, err := json.MarshalIndent(j, "  ", "  ")
		if err != nil {
			return err
		}
		if _, err := io.WriteString(w, sep); err != nil {
			return err
		}
		sep = ",\n  "
		_, err = w.Write(b)
		return err
	})
	if err != nil {
		return err
	}
	if sep == "[\n  " { // no mappings: an empty disk
		_, err = io.WriteString(w, "[]\n")
		return err
	}
	_, err = io.WriteString(w, "\n]\n")
	return err
}
