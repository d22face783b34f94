package source

import (
	"fmt"
	"io"

	"github.com/vmdkpop/vmdkpop/vmdk"
)

// Bounds of the small files an import reads whole: a CA bundle (the
// system's own is about 200 KiB) and a credential (a token or a name).
const (
	maxCABundle   = 4 << 20
	maxCredential = 64 << 10
)

// readSmallFile reads a file of at most limit bytes, such as a Secret's
// key mounted as a file. Like image inputs it must be a regular file (a
// FIFO would block open(2) until the Job's deadline; /dev/zero would never
// end), and it is refused rather than cut when it is longer.
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := vmdk.OpenDataFile(path, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: longer than %d bytes", path, limit)
	}
	return b, nil
}
