package vmdktest

import (
	"encoding/binary"
	"fmt"
	"iter"
	"math/rand/v2"
	"path/filepath"
)

// ChainOptions shapes WriteESXiChain's chain.
type ChainOptions struct {
	Deltas int    // seSparse deltas over the base (0: the base alone)
	Seed   uint64 // fixes every byte of the chain
	// VMFSSparse makes the first delta vmfsSparse (COWD), as a snapshot
	// taken on VMFS5 before the datastore moved to VMFS6 is.
	VMFSSparse bool
	// Scattered stores each delta's grains in a shuffled order (fixed by
	// Seed), as a guest writing at random leaves them: reading the disk
	// in order then reads the delta at scattered offsets.
	Scattered bool
}

// Chain is what WriteESXiChain wrote.
type Chain struct {
	Top   string // path of the newest descriptor: what a reader opens
	Files []string
	Model *Model // the content the chain reads as
}

// WriteESXiChain writes a deterministic ESXi-style chain in dir: a thin
// vmfs base <name>.vmdk + <name>-flat.vmdk of size bytes of MixedContent,
// then snapshots <name>-000001.vmdk + <name>-000001-sesparse.vmdk, ...,
// each overwriting a spread of grains (a few of them Zero or Unmapped) and
// leaving some 16 MiB ranges untouched, so their grain directory entries
// are holes. Grains are computed as they are written and as the Model is
// read: a 1 GiB chain costs its grain tables in memory.
func WriteESXiChain(dir, name string, size int64, o ChainOptions) (*Chain, error) {
	base := MixedContent(o.Seed, size)
	cid, err := WriteVMFSBase(dir, name, base, size, VMFSOptions{Thin: true})
	if err != nil {
		return nil, err
	}
	c := &Chain{
		Top:   filepath.Join(dir, name+".vmdk"),
		Files: []string{filepath.Join(dir, name+".vmdk"), filepath.Join(dir, name+"-flat.vmdk")},
		Model: &Model{Size: size, Base: base, BaseSize: size},
	}
	parent := name + ".vmdk"
	for d := 1; d <= o.Deltas; d++ {
		delta := fmt.Sprintf("%s-%06d", name, d)
		l := &spreadLayer{seed: o.Seed, delta: d, size: size, zeros: !(o.VMFSSparse && d == 1), scattered: o.Scattered}
		var extent string
		if o.VMFSSparse && d == 1 {
			cid, err = WriteVMFSSparseDeltaSeq(dir, delta, parent, cid, size, l.grains(), VMFSSparseOptions{})
			extent = delta + "-delta.vmdk"
		} else {
			// Odd deltas store grains from 0x1001 on, so their GT entries
			// use both halves of the split index field.
			first := int64(0)
			if d%2 == 1 {
				first = 0x1001
			}
			cid, err = WriteSESparseDeltaSeq(dir, delta, parent, cid, size, l.grains(), SESparseOptions{FirstGrainIndex: first})
			extent = delta + "-sesparse.vmdk"
		}
		if err != nil {
			return nil, err
		}
		c.Files = append(c.Files, filepath.Join(dir, delta+".vmdk"), filepath.Join(dir, extent))
		c.Model.Layers = append(c.Model.Layers, l)
		c.Top = filepath.Join(dir, delta+".vmdk")
		parent = delta + ".vmdk"
	}
	return c, nil
}

// spreadLayer is one delta of WriteESXiChain: which grains it holds is a
// function of (seed, delta, grain), so it is never held.
type spreadLayer struct {
	seed  uint64
	delta int
	size  int64
	zeros bool // may hold Zero and Unmapped grains (seSparse)
	// scattered: grains() yields them shuffled, not range by range.
	scattered bool
}

// Grain implements Layer.
func (l *spreadLayer) Grain(g int64) (Grain, bool) {
	if g < 0 || g*GrainSize >= l.size {
		return Grain{}, false
	}
	// Every third 16 MiB range (a different third for each delta) is left
	// alone: a grain directory hole.
	if (g/seGTEntries+int64(l.delta))%3 == 0 {
		return Grain{}, false
	}
	r := rand.New(rand.NewPCG(l.seed^0x5e5a, uint64(l.delta)<<40|uint64(g)))
	switch v := r.IntN(256); {
	case v < 14: // ~5% of grains rewritten
		data := make([]byte, GrainSize)
		for i := 0; i < GrainSize; i += 8 {
			binary.LittleEndian.PutUint64(data[i:], r.Uint64())
		}
		if v == 0 {
			copy(data, fmt.Sprintf("delta %d grain %d\n", l.delta, g))
			clear(data[GrainSize/2:]) // half a grain of zeros, still stored
		}
		return Grain{Index: g, Kind: Allocated, Data: data}, true
	case v == 14 && l.zeros:
		return Grain{Index: g, Kind: Zero}, true
	case v == 15 && l.zeros:
		return Grain{Index: g, Kind: Unmapped}, true
	}
	return Grain{}, false
}

// grains yields the layer's grains, the 16 MiB ranges in descending order
// (so where a grain is stored is not where it sits on the disk) and the
// grains of each range in ascending order; scattered, in a shuffled order.
func (l *spreadLayer) grains() iter.Seq[Grain] {
	if l.scattered {
		return l.shuffled()
	}
	return func(yield func(Grain) bool) {
		total := (l.size + GrainSize - 1) / GrainSize
		for t := (total - 1) / seGTEntries; t >= 0; t-- {
			for g := t * seGTEntries; g < min(total, (t+1)*seGTEntries); g++ {
				if gr, ok := l.Grain(g); ok && !yield(gr) {
					return
				}
			}
		}
	}
}

// shuffled yields the layer's grains in an order fixed by (seed, delta).
// Only their indices are held (8 bytes a grain: 2 MiB for a 1 GiB disk);
// each grain's data is computed again as it is yielded.
func (l *spreadLayer) shuffled() iter.Seq[Grain] {
	return func(yield func(Grain) bool) {
		var held []int64
		for gr := range (&spreadLayer{seed: l.seed, delta: l.delta, size: l.size, zeros: l.zeros}).grains() {
			held = append(held, gr.Index)
		}
		r := rand.New(rand.NewPCG(l.seed^0x5c47, uint64(l.delta)))
		r.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
		for _, g := range held {
			if gr, ok := l.Grain(g); ok && !yield(gr) {
				return
			}
		}
	}
}
