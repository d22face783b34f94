package vmdktest

import "fmt"

// GrainKind is what a delta holds for a grain it names. A grain a delta
// does not name is unallocated there: it reads from the parent.
type GrainKind uint8

const (
	// Allocated: the delta stores Data (zero-padded to GrainSize).
	Allocated GrainKind = iota
	// Zero: the delta says the grain reads as zeros (seSparse GT entry
	// type 2), whatever the parent holds.
	Zero
	// Unmapped: the guest unmapped (trimmed) the grain (seSparse type 1);
	// it reads as zeros, whatever the parent holds.
	Unmapped
)

func (k GrainKind) String() string {
	switch k {
	case Allocated:
		return "allocated"
	case Zero:
		return "zero"
	case Unmapped:
		return "unmapped"
	}
	return fmt.Sprintf("GrainKind(%d)", uint8(k))
}

// Grain is what a delta holds for one 4 KiB grain of the disk.
type Grain struct {
	Index int64 // grain number: the grain covers bytes [Index*GrainSize, +GrainSize)
	Kind  GrainKind
	Data  []byte // Allocated only; at most GrainSize bytes, the rest reads as zeros
}

// check refuses a grain the delta of capacity bytes cannot hold.
func (g Grain) check(capacity int64) error {
	grains := (capacity + GrainSize - 1) / GrainSize
	switch {
	case g.Index < 0 || g.Index >= grains:
		return fmt.Errorf("vmdktest: grain %d is outside a delta of %d grains", g.Index, grains)
	case g.Kind > Unmapped:
		return fmt.Errorf("vmdktest: grain %d: unknown kind %d", g.Index, g.Kind)
	case g.Kind != Allocated && len(g.Data) != 0:
		return fmt.Errorf("vmdktest: grain %d is %s but carries data", g.Index, g.Kind)
	case len(g.Data) > GrainSize:
		return fmt.Errorf("vmdktest: grain %d: %d bytes of data, a grain holds %d", g.Index, len(g.Data), GrainSize)
	}
	return nil
}

// Layer is a delta's content for the Model: the grains it names.
type Layer interface {
	// Grain returns the delta's grain at index, or ok false where the
	// delta holds nothing (the parent shows through).
	Grain(index int64) (g Grain, ok bool)
}

// GrainMap is a Layer held in memory, by grain index.
type GrainMap map[int64]Grain

// Grain implements Layer.
func (m GrainMap) Grain(index int64) (Grain, bool) {
	g, ok := m[index]
	return g, ok
}

// LayerOf indexes grains (as given to a delta writer) for the Model. A
// later grain with the same index replaces an earlier one, but the writers
// refuse duplicates.
func LayerOf(grains []Grain) GrainMap {
	m := make(GrainMap, len(grains))
	for _, g := range grains {
		m[g.Index] = g
	}
	return m
}
