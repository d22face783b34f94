package main

import (
	"context"
	"io"
)

// runFlatten is convert with VMDK output by default: the chain's content
// goes into one self-contained image, holes kept.
func runFlatten(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runConvertCommand(ctx, "flatten", append([]string{"-O", "vmdk"}, args...), stderr)
}
