package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	"github.com/vmdkpop/vmdkpop/vmdk/vmdktest"
)

// pieceUnit is the generator's granularity: every piece is a multiple of
// a grain (64 KiB), so that a grain is all one kind and the mix a VMDK
// sees is the mix generated.
const pieceUnit = 64 << 10

// maxPiece bounds a piece at 3 MiB (48 grains), the mix.
const maxPiece = 48 * pieceUnit

// Kinds of piece, drawn 2:1:2 so that the bytes are about 40% zeros,
// 20% random and 40% text.
const (
	kindZero = iota
	kindRandom
	kindText
)

// share is each kind's fifth of the bytes.
var share = [3]int64{kindZero: 2, kindRandom: 1, kindText: 2}

func kindOf(draw int) int {
	switch draw {
	case 0, 1:
		return kindZero
	case 2:
		return kindRandom
	default:
		return kindText
	}
}

// mix counts the bytes of each kind written.
type mix [3]int64

// generate writes content bytes of mixed pieces into f, a file of size
// bytes: the piece at content offset off lands at off*(size/content), so
// a larger size spreads the same content (the same bytes, in the same
// order) over a larger virtual disk with holes between the pieces. Zero
// pieces are left as holes.
func generate(f *os.File, size, content int64, seed uint64) (mix, error) {
	var m mix
	if content <= 0 || size < content || content%pieceUnit != 0 || size%pieceUnit != 0 {
		return m, fmt.Errorf("size %d and content %d: want 0 < content <= size, both multiples of %d", size, content, pieceUnit)
	}
	spread := size / content
	r := rand.New(rand.NewPCG(seed, 0x766d646b))
	var key [32]byte
	key[0] = byte(seed)
	noise := rand.NewChaCha8(key)
	buf := make([]byte, maxPiece)
	for off := int64(0); off < content; {
		n := min(int64(1+r.IntN(maxPiece/pieceUnit))*pieceUnit, content-off)
		kind := kindOf(r.IntN(5))
		// A random draw alone strays from the mix by several points on
		// a small disk (a few dozen pieces): a kind more than a piece
		// over its share gives way to the kind furthest under its own,
		// which holds every kind within 3 MiB of its share.
		if m[kind]+n-share[kind]*(off+n)/5 > maxPiece {
			for k := range share {
				if share[k]*(off+n)/5-m[k] > share[kind]*(off+n)/5-m[kind] {
					kind = k
				}
			}
		}
		b := buf[:n]
		switch kind {
		case kindRandom:
			noise.Read(b)
		case kindText:
			vmdktest.LogLines(r, b)
		}
		if kind != kindZero {
			if _, err := f.WriteAt(b, off*spread); err != nil {
				return m, err
			}
		}
		m[kind] += n
		off += n
	}
	return m, f.Truncate(size)
}

func genMain(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	sizeFlag := fs.String("size", "1G", "virtual size (bytes or K/M/G/T suffix, a multiple of 64 KiB)")
	contentFlag := fs.String("content", "", "bytes of generated content, spread over -size (default: -size)")
	seed := fs.Uint64("seed", 1, "seed fixing every byte")
	out := fs.String("o", "", "output raw file (created or truncated)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("gen: -o is required")
	}
	size, err := parseSize(*sizeFlag)
	if err != nil {
		return err
	}
	content := size
	if *contentFlag != "" {
		if content, err = parseSize(*contentFlag); err != nil {
			return err
		}
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	m, err := generate(f, size, content, *seed)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("gen %s: %w", *out, err)
	}
	fmt.Printf("%s: %d MiB virtual, content %d MiB zeros, %d MiB random, %d MiB text\n",
		*out, size>>20, m[kindZero]>>20, m[kindRandom]>>20, m[kindText]>>20)
	return nil
}

// parseSize reads bytes with an optional K, M, G or T suffix (powers of
// 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-min(len(s), 1):]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	num := s
	if mult > 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, with an optional K, M, G or T suffix", s)
	}
	return n * mult, nil
}
