package vmdktest

import (
	"fmt"
	"io"
)

// Model is the content a chain must read as: a base (its content, zeros
// past BaseSize) under deltas, the newest last. Each delta's grains
// replace what is below them (Zero and Unmapped grains with zeros); the
// rest of the disk shows through. It is an io.ReaderAt over Size bytes,
// computed as it is read: a 1 GiB model costs what its layers hold.
type Model struct {
	Size     int64       // the top disk's size
	Base     io.ReaderAt // base content; nil reads as zeros
	BaseSize int64       // bytes of the base disk (content past it reads as zeros)
	Layers   []Layer     // deltas, oldest first
}

// ReadAt implements io.ReaderAt.
func (m *Model) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vmdktest: model read at negative offset %d", off)
	}
	if off >= m.Size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), m.Size-off))
	for done := 0; done < n; {
		pos := off + int64(done)
		g := pos / GrainSize
		in := pos % GrainSize
		chunk := p[done:min(n, done+int(GrainSize-in))]
		if err := m.readGrain(chunk, g, in); err != nil {
			return done, err
		}
		done += len(chunk)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readGrain fills p with the bytes of grain g from in.
func (m *Model) readGrain(p []byte, g, in int64) error {
	for i := len(m.Layers) - 1; i >= 0; i-- {
		gr, ok := m.Layers[i].Grain(g)
		if !ok {
			continue
		}
		clear(p)
		if gr.Kind == Allocated && in < int64(len(gr.Data)) {
			copy(p, gr.Data[in:])
		}
		return nil
	}
	pos := g*GrainSize + in
	clear(p)
	if m.Base == nil || pos >= m.BaseSize {
		return nil
	}
	q := p[:min(int64(len(p)), m.BaseSize-pos)]
	return readContent(m.Base, q, pos)
}

// WriteTo writes the whole content to w, 1 MiB at a time.
func (m *Model) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, copyChunk)
	var total int64
	for off := int64(0); off < m.Size; {
		n, err := m.ReadAt(buf[:min(copyChunk, m.Size-off)], off)
		if err != nil && err != io.EOF {
			return total, err
		}
		k, err := w.Write(buf[:n])
		total += int64(k)
		if err != nil {
			return total, err
		}
		off += int64(n)
	}
	return total, nil
}
