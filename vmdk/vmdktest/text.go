package vmdktest

import (
	"math/rand/v2"
	"strconv"
)

var (
	logWords = []string{"vmdk", "grain", "table", "kubernetes", "volume", "populator", "kubelet",
		"mounted", "sector", "extent", "descriptor", "stream", "marker", "footer", "the", "a", "of",
		"to", "and", "in", "is", "for", "on", "with", "from", "pod", "node", "disk", "image", "raw"}
	logLevels = []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
)

// LogLines fills b with log-like lines ("2024-05-17T12:31:44 INFO grain
// the volume id=3fa2c"): compressible about as real guest text is (3-4x),
// unlike zeros or random bytes. The benchmarks' text (hack/benchtool gen,
// vmdk's write benchmarks): the same r gives the same bytes.
func LogLines(r *rand.Rand, b []byte) {
	line := make([]byte, 0, 256)
	for i := 0; i < len(b); {
		line = append(line[:0], "2024-05-"...)
		line = strconv.AppendInt(line, 10+r.Int64N(20), 10)
		line = append(line, 'T')
		for k, lim := range []int64{14, 50, 50} {
			if k > 0 {
				line = append(line, ':')
			}
			line = strconv.AppendInt(line, 10+r.Int64N(lim), 10)
		}
		line = append(line, ' ')
		line = append(line, logLevels[r.IntN(len(logLevels))]...)
		for n := 3 + r.IntN(10); n > 0; n-- {
			line = append(line, ' ')
			line = append(line, logWords[r.IntN(len(logWords))]...)
		}
		line = append(line, " id="...)
		line = strconv.AppendUint(line, r.Uint64N(1<<20), 16)
		line = append(line, '\n')
		i += copy(b[i:], line)
	}
}
