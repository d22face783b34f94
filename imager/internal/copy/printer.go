package copy

import (
	"fmt"
	"io"
	"time"
)

// Printer returns a reporter that redraws "(xx.xx/100%)" on w at
// most every 100 ms; done < 0 finishes the line.
func Printer(w io.Writer, total int64) func(int64) {
	var last time.Time
	return func(done int64) {
		if done < 0 {
			fmt.Fprintf(w, "    (100.00/100%%)\n")
			return
		}
		if time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		fmt.Fprintf(w, "    (%.2f/100%%)\r", pct)
	}
}
