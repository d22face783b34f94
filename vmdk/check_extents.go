package vmdk

// checkLine reports a sparse extent whose line shows less of it than its
// header holds (fitSparseLine's hidden part): what lies there is not part
// of the disk, so grains allocated there are data no reader sees. (A line
// larger than the capacity already fails Open, which Check reports.)
// allocatedEnd is the end of the extent's last allocated grain.
func checkLine(r *CheckReport, pe placedExtent, se *sparseExtent, allocatedEnd int64) {
	hidden, err := fitSparseLine(se.src.name, pe.size, se.capacity)
	switch {
	case err != nil:
		r.corrupt("%v", err)
	case hidden > 0 && allocatedEnd > pe.size:
		r.corrupt("%s: the extent line places %d sectors but the sparse header's capacity is %d: grains allocated up to sector %d are not part of the disk",
			se.src.name, pe.size/SectorSize, se.capacity/SectorSize, (allocatedEnd+SectorSize-1)/SectorSize)
	case hidden > 0:
		r.corrupt("%s: the extent line places %d sectors but the sparse header's capacity is %d", se.src.name, pe.size/SectorSize, se.capacity/SectorSize)
	}
}

// allocatedEnd is the byte just past the extent's last allocated grain
// (zeroed grains included), 0 if none; it reads only the tables the grain
// directory names, and of those neither the ones lying in a hole of the
// file nor one named again by the next GD entry.
func (e *sparseExtent) allocatedEnd() int64 {
	var (
		end  int64
		hole holeWindow
		last = -1 // the last non-zero entry of the table before
	)
	for i := int64(0); i < (e.capacity+e.grainBytes*e.gtEntries-1)/(e.grainBytes*e.gtEntries); i++ {
		if e.tableAbsent(i) || e.tableInHole(i, &hole) {
			last = -1
			continue
		}
		if e.pinned || i == 0 || e.gd[i] != e.gd[i-1] {
			gt, err := e.grainTable(uint32(i))
			if err != nil {
				last = -1
				continue // the table's own check reports it
			}
			e.mu.Lock()
			last = -1
			if zeroPrefix(gt) < len(gt) { // else all empty, at memory speed
				for last = len(gt) - 1; gt[last] == 0; last-- {
				}
			}
			e.mu.Unlock()
		}
		if last >= 0 {
			end = min(e.capacity, (i*e.gtEntries+int64(last)+1)*e.grainBytes)
		}
	}
	return end
}
