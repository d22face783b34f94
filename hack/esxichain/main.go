// Command esxichain writes a deterministic ESXi-style snapshot chain for
// tests, demos and benchmarks: a thin vmfs base (vm.vmdk + vm-flat.vmdk,
// mixed text, random and zero content) under seSparse snapshot deltas
// (vm-000001.vmdk + vm-000001-sesparse.vmdk, ...), each rewriting a spread
// of grains, some of them zeroed or unmapped. It prints the sha256 of the
// content the chain reads as, and with -raw writes that content too.
//
//	go run ./hack/esxichain -dir D -size 64M -deltas 1 -seed 1 [-raw expected.raw] [-name vm] [-vmfssparse] [-scattered]
//
// The files are made by package vmdk/vmdktest (WriteESXiChain); memory
// stays bounded whatever the size (a 1 GiB chain is written in seconds).
package main

import (
	"bufio"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

func main() {
	dir := flag.String("dir", "", "directory to write the chain into (created if missing)")
	sizeFlag := flag.String("size", "64M", "disk size: bytes, or with a K, M, G or T suffix (a multiple of 512)")
	deltas := flag.Int("deltas", 1, "number of snapshot deltas over the base")
	seed := flag.Uint64("seed", 1, "seed fixing every byte of the chain")
	raw := flag.String("raw", "", "also write the expected raw content to this file")
	name := flag.String("name", "vm", "disk name: files are NAME.vmdk, NAME-flat.vmdk, NAME-000001.vmdk, ...")
	vmfsSparse := flag.Bool("vmfssparse", false, "make the first delta vmfsSparse (COWD -delta.vmdk), as a VMFS5 snapshot is")
	scattered := flag.Bool("scattered", false, "store each delta's grains in a shuffled order, as a guest writing at random leaves them")
	flag.Parse()
	if err := run(*dir, *sizeFlag, *deltas, *seed, *raw, *name, *vmfsSparse, *scattered); err != nil {
		fmt.Fprintln(os.Stderr, "esxichain:", err)
		os.Exit(1)
	}
}

func run(dir, sizeFlag string, deltas int, seed uint64, raw, name string, vmfsSparse, scattered bool) error {
	if dir == "" {
		return fmt.Errorf("-dir is required")
	}
	if deltas < 0 {
		return fmt.Errorf("-deltas %d: must be 0 or more", deltas)
	}
	size, err := parseSize(sizeFlag)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	c, err := vmdktest.WriteESXiChain(dir, name, size, vmdktest.ChainOptions{Deltas: deltas, Seed: seed, VMFSSparse: vmfsSparse, Scattered: scattered})
	if err != nil {
		return err
	}
	sum := sha256.New()
	w := io.Writer(sum)
	var out *os.File
	var buf *bufio.Writer
	if raw != "" {
		if out, err = os.Create(raw); err != nil {
			return err
		}
		defer out.Close()
		buf = bufio.NewWriterSize(out, 1<<20)
		w = io.MultiWriter(sum, buf)
	}
	if _, err := c.Model.WriteTo(w); err != nil {
		return fmt.Errorf("expected content: %w", err)
	}
	if out != nil {
		if err := buf.Flush(); err != nil {
			return err
		}
		if err := out.Close(); err != nil {
			return err
		}
	}
	fmt.Printf("%x  %s\n", sum.Sum(nil), filepath.Base(c.Top))
	return nil
}

// parseSize reads 64M, 1G, 104861696 and the like (binary units).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if i := strings.IndexAny(s, "kKmMgGtT"); i >= 0 && i == len(s)-1 {
		mult = map[byte]int64{'k': 1 << 10, 'm': 1 << 20, 'g': 1 << 30, 't': 1 << 40}[strings.ToLower(s[i:])[0]]
		s = s[:i]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<42)/mult {
		return 0, fmt.Errorf("-size %q: want a positive size such as 64M or 1G", s)
	}
	n *= mult
	if n%512 != 0 {
		return 0, fmt.Errorf("-size %d: must be a multiple of 512 bytes", n)
	}
	return n, nil
}
