package vmdk

import (
	"bytes"
	stdflate "compress/flate"
	stdzlib "compress/zlib"
	"errors"
	"fmt"
	stdadler32 "hash/adler32"
	"io"
	"math/rand"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zlib"
)

// refInflate is the grain inflate this package used before its own
// decoder: klauspost's streaming readers, which must agree with inflate
// on every stream, good or bad.
func refInflate(dst, src []byte) error {
	var r io.Reader
	if isZlib(src) {
		zr, err := zlib.NewReader(bytes.NewReader(src))
		if err != nil {
			return err
		}
		r = zr
	} else {
		r = flate.NewReader(bytes.NewReader(src))
	}
	n, err := io.ReadFull(r, dst)
	if err != nil {
		return fmt.Errorf("inflated to %d: %w", n, err)
	}
	var extra [1]byte
	switch n, err := r.Read(extra[:]); {
	case n > 0:
		return errors.New("too long")
	case err != nil && err != io.EOF:
		return err
	}
	return nil
}

// inflateCorpus is content of every kind a grain holds, compressed every
// way the writers here and elsewhere compress it: stored, fixed and
// dynamic blocks, several blocks, raw deflate and zlib.
func inflateCorpus(t testing.TB) (raws, streams [][]byte) {
	r := rand.New(rand.NewSource(7))
	random := make([]byte, 70000)
	r.Read(random)
	contents := [][]byte{
		{}, {'a'}, []byte("abcabcabcabcabcabc"), make([]byte, 65536),
		mixedContent(3, 64<<10), mixedContent(4, 64<<10)[:40000], random[:65536], random[:300],
		bytes.Repeat([]byte("grain table "), 6000),
	}
	// Runs of one byte and short periods: overlapping copies.
	var runs []byte
	for i := 0; len(runs) < 64<<10; i++ {
		runs = append(runs, bytes.Repeat([]byte{byte(i)}, 1+i%300)...)
		runs = append(runs, bytes.Repeat([]byte{byte(i), byte(i * 7), byte(i * 13)}, i%50)...)
	}
	contents = append(contents, runs[:64<<10])
	for _, c := range contents {
		for _, level := range []int{-2, 0, 1, 2, 5, 6, 9} {
			var b bytes.Buffer
			w, err := zlib.NewWriterLevel(&b, level)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(c)
			w.Close()
			raws, streams = append(raws, c), append(streams, bytes.Clone(b.Bytes()))
			b.Reset()
			fw, err := flate.NewWriter(&b, level)
			if err != nil {
				t.Fatal(err)
			}
			fw.Write(c[:len(c)/2])
			fw.Flush() // a sync flush: an empty stored block between blocks
			fw.Write(c[len(c)/2:])
			fw.Close()
			raws, streams = append(raws, c), append(streams, bytes.Clone(b.Bytes()))
		}
		// The standard library's encoder picks blocks its own way.
		for _, level := range []int{stdflate.HuffmanOnly, 1, 9} {
			var b bytes.Buffer
			w, _ := stdzlib.NewWriterLevel(&b, level)
			w.Write(c)
			w.Close()
			raws, streams = append(raws, c), append(streams, bytes.Clone(b.Bytes()))
		}
	}
	return raws, streams
}

// TestInflateMatches: every corpus stream inflates to its content, and to
// an error into a buffer a byte shorter or longer, as the reference does.
func TestInflateMatches(t *testing.T) {
	raws, streams := inflateCorpus(t)
	for i, s := range streams {
		want := raws[i]
		got := make([]byte, len(want))
		if err := inflate(got, s); err != nil {
			t.Fatalf("stream %d (%d bytes of %d): %v", i, len(s), len(want), err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("stream %d: inflated content differs", i)
		}
		if len(want) > 0 {
			if err := inflate(make([]byte, len(want)-1), s); err == nil {
				t.Fatalf("stream %d: inflated into a buffer a byte short", i)
			}
		}
		if err := inflate(make([]byte, len(want)+1), s); err == nil {
			t.Fatalf("stream %d: inflated into a buffer a byte long", i)
		}
		// Every cut of the stream fails (a few cuts of each).
		for _, cut := range []int{0, 1, len(s) / 3, len(s) - 5, len(s) - 1} {
			if cut < 0 || cut >= len(s) {
				continue
			}
			if err := inflate(make([]byte, len(want)), s[:cut]); err == nil && isZlib(s) {
				t.Fatalf("stream %d cut at %d of %d inflated", i, cut, len(s))
			}
		}
	}
}

// TestInflateRefuses: streams zlib refuses are refused.
func TestInflateRefuses(t *testing.T) {
	good := zlibOf(t, []byte("some grain content, some grain content"))
	badSum := bytes.Clone(good)
	badSum[len(badSum)-1] ^= 1
	dict := bytes.Clone(good)
	dict[1] = dict[1]&^0x1f | 0x20 // FDICT, and an FCHECK that keeps the header valid:
	dict[1] += byte((31 - (uint16(dict[0])<<8|uint16(dict[1]))%31) % 31)
	cases := map[string][]byte{
		"bad checksum":  badSum,
		"preset dict":   dict,
		"block type 3":  {0x07},
		"stored NLEN":   {0x01, 0x05, 0x00, 0x00, 0x00, 'a'},
		"far distance":  farDistance(),
		"empty":         {},
		"cut in stored": {0x01, 0x05, 0x00, 0xfa, 0xff, 'a', 'b'},
		// The zeros read past a cut decode as the fixed code's end of
		// block (0000000): the cut must still be seen.
		"cut before end of block": fixedLiteral()[:2],
		"incomplete code":         incompleteCode(),
	}
	if err := inflate(make([]byte, 1), fixedLiteral()); err != nil {
		t.Fatalf("the uncut fixed-code stream: %v", err)
	}
	for name, s := range cases {
		size := 38
		if len(s) < 8 || name == "incomplete code" {
			size = 1
		}
		if err := inflate(make([]byte, size), s); err == nil {
			t.Errorf("%s: inflated", name)
		}
		if refInflate(make([]byte, size), s) == nil {
			t.Errorf("%s: the reference inflated it: not a refusal case", name)
		}
	}
}

// farDistance is a fixed-code block whose first symbol copies from before
// the start.
func farDistance() []byte {
	var w bitWriter
	w.put(1, 1) // final
	w.put(1, 2) // fixed
	// Length 3 is symbol 257: fixed code 0000001 (7 bits), sent MSB first.
	w.putCode(0b0000001, 7)
	w.putCode(0, 5) // distance code 0: distance 1, but nothing was written
	w.putCode(0, 7) // end of block
	return w.bytes()
}

// fixedLiteral is a fixed-code block of the literal 'a', its end-of-block
// code in its third byte.
func fixedLiteral() []byte {
	var w bitWriter
	w.put(1, 1)
	w.put(1, 2)
	w.putCode(0x30+'a', 8)
	w.putCode(0, 7)
	return w.bytes()
}

// incompleteCode is a dynamic block of the literal 'a' whose
// literal/length code is two codes of two bits ('a' and end of block):
// incomplete, so refused, though it would decode.
func incompleteCode() []byte {
	var w bitWriter
	w.put(1, 1)
	w.put(2, 2)
	w.put(0, 5)  // 257 literal/length codes
	w.put(0, 5)  // 1 distance code
	w.put(12, 4) // 16 code-length code lengths, in clenOrder
	for _, l := range []uint64{0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2} {
		w.put(l, 3)
	}
	// The code-length code: 18 is 0, 0 is 10, 2 is 11.
	w.putCode(0, 1)
	w.put(97-11, 7) // 97 zero lengths
	w.putCode(0b11, 2)
	w.putCode(0, 1)
	w.put(138-11, 7)
	w.putCode(0, 1)
	w.put(20-11, 7)
	w.putCode(0b11, 2) // end of block: 2 bits
	w.putCode(0b10, 2) // the one distance code: unused
	w.putCode(0b00, 2) // 'a'
	w.putCode(0b01, 2) // end of block
	return w.bytes()
}

type bitWriter struct {
	out  []byte
	acc  uint64
	nacc uint
}

func (w *bitWriter) put(v uint64, n uint) {
	w.acc |= v << w.nacc
	w.nacc += n
	for w.nacc >= 8 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.nacc -= 8
	}
}

// putCode sends a Huffman code, most significant bit first.
func (w *bitWriter) putCode(code uint64, n uint) {
	for i := int(n) - 1; i >= 0; i-- {
		w.put(code>>uint(i)&1, 1)
	}
}

func (w *bitWriter) bytes() []byte {
	if w.nacc > 0 {
		w.out = append(w.out, byte(w.acc))
	}
	return w.out
}

// TestAdler32 holds the 8-bytes-at-once Adler-32 to hash/adler32's, over
// lengths around its 8-byte steps and its 1 MiB blocks, on bytes of 0xff
// (the largest sums) and random ones.
func TestAdler32(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	big := make([]byte, 3<<20+13)
	r.Read(big)
	ff := bytes.Repeat([]byte{0xff}, 3<<20+13)
	for _, b := range [][]byte{big, ff} {
		for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 5552, 65536, 1<<20 - 1, 1 << 20, 1<<20 + 9, len(b)} {
			if got, want := adler32(b[:n]), stdadler32.Checksum(b[:n]); got != want {
				t.Fatalf("adler32 of %d bytes: %08x, want %08x", n, got, want)
			}
		}
	}
}

// FuzzInflate holds inflate to the reference on the corpus's streams with
// bytes changed, inserted and cut: both refuse, or both inflate the same
// bytes.
func FuzzInflate(f *testing.F) {
	raws, streams := inflateCorpus(f)
	for i, s := range streams {
		f.Add(s, uint32(len(raws[i])), uint32(i*7919))
	}
	f.Fuzz(func(t *testing.T, s []byte, size uint32, edit uint32) {
		size %= 1 << 17
		s = bytes.Clone(s)
		if len(s) > 0 {
			at := int(edit>>8) % len(s)
			switch edit & 3 {
			case 1:
				s[at] ^= byte(edit >> 2)
			case 2:
				s = s[:at]
			}
		}
		a, b := make([]byte, size), make([]byte, size)
		errA, errB := inflate(a, s), refInflate(b, s)
		if (errA == nil) != (errB == nil) {
			t.Fatalf("inflate: %v; reference: %v", errA, errB)
		}
		if errA == nil && !bytes.Equal(a, b) {
			t.Fatal("inflate and the reference inflated different bytes")
		}
	})
}
