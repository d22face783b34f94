package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Limits on untrusted descriptor text. A real descriptor is a few hundred
// bytes; a 64 TiB twoGbMaxExtentFlat disk has 32768 extent lines.
const (
	maxDescriptorBytes = 1 << 20
	maxExtents         = 1 << 16
)

// NoParentCID is the parentCID of an image without a backing file.
const NoParentCID uint32 = 0xffffffff

// Access is an extent line's access mode.
type Access string

const (
	AccessRW       Access = "RW"
	AccessRDOnly   Access = "RDONLY"
	AccessNoAccess Access = "NOACCESS"
)

// ExtentType is an extent line's type.
type ExtentType string

const (
	ExtentFlat       ExtentType = "FLAT"
	ExtentSparse     ExtentType = "SPARSE"
	ExtentZero       ExtentType = "ZERO"
	ExtentVMFS       ExtentType = "VMFS"
	ExtentVMFSSparse ExtentType = "VMFSSPARSE"
	ExtentSESparse   ExtentType = "SESPARSE"
	// Raw device mappings and raw disks: parsed to be refused, their data
	// is on a LUN (see refusedExtent).
	ExtentVMFSRDM  ExtentType = "VMFSRDM"
	ExtentVMFSRDMP ExtentType = "VMFSRDMP"
	ExtentVMFSRaw  ExtentType = "VMFSRAW"
	// ExtentVSANSparse is a vSAN object: refused, it is not a file.
	ExtentVSANSparse ExtentType = "VSANSPARSE"
)

// ExtentLine is one line of the descriptor's extent description.
type ExtentLine struct {
	Access  Access
	Sectors int64 // size in 512-byte sectors; every line counts toward the disk size
	Type    ExtentType
	File    string // relative to the descriptor's directory; empty for ZERO
	Offset  int64  // sectors into File, FLAT-like extents only
}

// KeyValue is a descriptor entry kept verbatim (key spelling and value as
// written, quotes removed).
type KeyValue struct {
	Key, Value string
}

// Descriptor is the parsed text that names a disk's extents and parent.
type Descriptor struct {
	Version            int
	Encoding           string
	CID                uint32
	ParentCID          uint32
	CreateType         string
	ParentFileNameHint string
	Extents            []ExtentLine
	// DDB holds the "ddb." entries (adapter type, geometry, UUIDs, ...) in
	// file order; Other holds any other key=value entry.
	DDB   []KeyValue
	Other []KeyValue
}

// Sectors is the disk's virtual size in sectors: the sum of every extent
// line, whatever its access or type.
func (d *Descriptor) Sectors() int64 {
	var n int64
	for _, e := range d.Extents {
		n += e.Sectors
	}
	return n
}

// DDBValue returns the value of a ddb key (case-insensitive), or "".
func (d *Descriptor) DDBValue(key string) string {
	for _, kv := range d.DDB {
		if strings.EqualFold(kv.Key, key) {
			return kv.Value
		}
	}
	return ""
}

// ParseDescriptor parses descriptor text. The grammar is case-insensitive;
// lines may end in CRLF; '#' starts a comment line; keys are matched whole,
// never by substring (QEMU's strstr lookup reads "CID" out of "parentCID").
// Text after the first NUL byte is ignored: embedded descriptors are padded
// with zeros to their sector count.
func ParseDescriptor(text []byte) (_ *Descriptor, err error) {
	// A version this package does not know is reported once the rest is
	// read: a disk that cannot be read from any file (vSAN, RDM) says so
	// whatever its version, and a later line the version explains is not
	// called corrupt.
	var badVersion error
	defer func() {
		if badVersion != nil && !isRefusal(err) {
			err = badVersion
		}
	}()
	if i := bytes.IndexByte(text, 0); i >= 0 {
		text = text[:i]
	}
	if len(text) > maxDescriptorBytes {
		return nil, fmt.Errorf("%w: descriptor is %d bytes, limit %d", ErrCorrupt, len(text), maxDescriptorBytes)
	}
	d := &Descriptor{CID: 0, ParentCID: NoParentCID}
	seenVersion, seenCID := false, false
	var sectors int64
	for n, raw := range strings.Split(string(text), "\n") {
		line := strings.TrimSpace(strings.TrimRight(raw, "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		lineNo := n + 1
		if strings.ContainsRune(line, '\r') {
			// Some readers end a line there: Format could not write it back
			// as one line.
			return nil, fmt.Errorf("%w: descriptor line %d holds a carriage return", ErrCorrupt, lineNo)
		}
		if ext, ok, err := parseExtentLine(line); err != nil {
			if errors.Is(err, ErrUnsupported) {
				return nil, fmt.Errorf("descriptor line %d: %w", lineNo, err)
			}
			return nil, fmt.Errorf("%w: descriptor line %d: %v", ErrCorrupt, lineNo, err)
		} else if ok {
			if len(d.Extents) >= maxExtents {
				return nil, fmt.Errorf("%w: descriptor has more than %d extents", ErrCorrupt, maxExtents)
			}
			if sectors += ext.Sectors; sectors > maxDiskSectors {
				return nil, fmt.Errorf("%w: descriptor extents add up to more than %d sectors", ErrCorrupt, int64(maxDiskSectors))
			}
			d.Extents = append(d.Extents, ext)
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%w: descriptor line %d: %q is neither key=value nor an extent", ErrCorrupt, lineNo, truncate(line))
		}
		key, value = strings.TrimSpace(key), unquote(strings.TrimSpace(value))
		switch strings.ToLower(key) {
		case "version":
			v, err := strconv.Atoi(value)
			if err != nil || v < 1 || v > 3 {
				badVersion = fmt.Errorf("%w: descriptor version %q", ErrUnsupported, truncate(value))
				continue
			}
			d.Version, seenVersion = v, true
		case "encoding":
			d.Encoding = value
		case "cid":
			cid, err := parseCID(value)
			if err != nil {
				return nil, fmt.Errorf("%w: descriptor line %d: CID: %v", ErrCorrupt, lineNo, err)
			}
			d.CID, seenCID = cid, true
		case "parentcid":
			cid, err := parseCID(value)
			if err != nil {
				return nil, fmt.Errorf("%w: descriptor line %d: parentCID: %v", ErrCorrupt, lineNo, err)
			}
			d.ParentCID = cid
		case "createtype":
			if err := refusedCreateType(value); err != nil {
				return nil, fmt.Errorf("descriptor line %d: %w", lineNo, err)
			}
			d.CreateType = value
		case "parentfilenamehint":
			if isVSANObject(value) {
				return nil, refusal{fmt.Errorf("descriptor line %d: %w: parent %q is a vSAN object: %s", lineNo, ErrUnsupported, truncate(value), vsanWayForward)}
			}
			d.ParentFileNameHint = value
		default:
			kv := KeyValue{Key: key, Value: value}
			if len(key) > 4 && strings.EqualFold(key[:4], "ddb.") {
				d.DDB = append(d.DDB, kv)
			} else {
				d.Other = append(d.Other, kv)
			}
		}
	}
	if !seenVersion {
		return nil, fmt.Errorf("%w: descriptor has no version= line", ErrCorrupt)
	}
	if !seenCID {
		return nil, fmt.Errorf("%w: descriptor has no CID= line", ErrCorrupt)
	}
	if badVersion != nil {
		return nil, badVersion
	}
	return d, nil
}

// parseExtentLine recognises "ACCESS SECTORS TYPE ["FILE" [OFFSET]]". ok is
// false when the line is not an extent line at all (a key=value line).
func parseExtentLine(line string) (e ExtentLine, ok bool, err error) {
	first, rest := line, ""
	if i := strings.IndexAny(line, " \t"); i >= 0 {
		first, rest = line[:i], line[i+1:]
	}
	switch Access(strings.ToUpper(strings.TrimSpace(first))) {
	case AccessRW:
		e.Access = AccessRW
	case AccessRDOnly:
		e.Access = AccessRDOnly
	case AccessNoAccess:
		e.Access = AccessNoAccess
	default:
		return e, false, nil
	}
	// "RW=..." would be a key; extent lines have no '=' before the file name.
	if strings.HasPrefix(strings.TrimSpace(rest), "=") {
		return e, false, nil
	}
	fields, err := splitExtentFields(rest)
	if err != nil {
		return e, true, err
	}
	if len(fields) < 2 || len(fields) > 4 {
		return e, true, fmt.Errorf("extent line %q: want ACCESS SECTORS TYPE \"FILE\" [OFFSET]", truncate(line))
	}
	e.Sectors, err = strconv.ParseInt(fields[0], 10, 64)
	if err != nil || e.Sectors < 0 || e.Sectors > maxDiskSectors {
		return e, true, fmt.Errorf("extent line %q: bad sector count", truncate(line))
	}
	e.Type = ExtentType(strings.ToUpper(fields[1]))
	if err := refusedExtent(e.Type, fields[2:]); err != nil {
		return e, true, err
	}
	switch e.Type {
	case ExtentZero:
		if len(fields) > 2 && fields[2] != "" {
			return e, true, fmt.Errorf("extent line %q: ZERO extents have no file", truncate(line))
		}
		return e, true, nil
	case ExtentFlat, ExtentSparse, ExtentVMFS, ExtentVMFSSparse, ExtentSESparse: // RDMs were refused above
	default:
		return e, true, fmt.Errorf("%w: extent type %q", ErrUnsupported, truncate(fields[1]))
	}
	if len(fields) < 3 || fields[2] == "" {
		return e, true, fmt.Errorf("extent line %q: missing file name", truncate(line))
	}
	e.File = fields[2]
	if strings.ContainsAny(e.File, "\"\x00\r") {
		// A carriage return cannot survive a line-based descriptor (nor
		// Format): refused rather than read as another name.
		return e, true, fmt.Errorf("extent line %q: file name holds a quote, carriage return or NUL", truncate(line))
	}
	if len(fields) == 4 {
		if !e.Type.flatLike() {
			return e, true, fmt.Errorf("extent line %q: only flat extents take an offset", truncate(line))
		}
		e.Offset, err = strconv.ParseInt(fields[3], 10, 64)
		if err != nil || e.Offset < 0 || e.Offset > maxDiskSectors {
			return e, true, fmt.Errorf("extent line %q: bad offset", truncate(line))
		}
	}
	return e, true, nil
}

func (t ExtentType) flatLike() bool {
	return t == ExtentFlat || t == ExtentVMFS
}

// splitExtentFields splits on blanks, keeping a double-quoted file name
// (which may hold spaces) as one field.
func splitExtentFields(s string) ([]string, error) {
	var fields []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return fields, nil
		}
		if len(fields) > 4 {
			return nil, fmt.Errorf("too many fields")
		}
		if s[0] == '"' {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unterminated quoted file name")
			}
			fields = append(fields, s[1:1+end])
			s = s[2+end:]
			continue
		}
		end := strings.IndexAny(s, " \t")
		if end < 0 {
			end = len(s)
		}
		fields = append(fields, s[:end])
		s = s[end:]
	}
}

func parseCID(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is not 8 hex digits", truncate(s))
	}
	return uint32(v), nil
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// truncate keeps error messages one readable line for hostile input.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// quoted renders an extent file name between double quotes. Quotes and
// line breaks cannot be expressed in a name, so they are dropped rather
// than let it start a new descriptor line. Other bytes are kept as they
// are, valid UTF-8 or not.
func quoted(v string) string { return `"` + nameUnsafe.Replace(v) + `"` }

// quotedValue renders a key=value entry's value between double quotes.
// The parser removes one pair of surrounding quotes and keeps the rest
// verbatim, quotes included, so only line breaks (which a parsed value
// cannot hold) are dropped: what ParseDescriptor read, Format writes back.
func quotedValue(v string) string { return `"` + valueUnsafe.Replace(v) + `"` }

var (
	nameUnsafe  = strings.NewReplacer(`"`, "", "\n", "", "\r", "", "\x00", "")
	valueUnsafe = strings.NewReplacer("\n", "", "\r", "", "\x00", "")
)

// Format renders the descriptor in the layout VMware and qemu-img write.
func (d *Descriptor) Format() []byte {
	var b strings.Builder
	b.WriteString("# Disk DescriptorFile\n")
	fmt.Fprintf(&b, "version=%d\n", max(d.Version, 1))
	// Values are written between quotes verbatim, as the parser reads them
	// (%q would add Go escapes that no VMDK reader removes).
	if d.Encoding != "" {
		fmt.Fprintf(&b, "encoding=%s\n", quotedValue(d.Encoding))
	}
	fmt.Fprintf(&b, "CID=%08x\n", d.CID)
	fmt.Fprintf(&b, "parentCID=%08x\n", d.ParentCID)
	fmt.Fprintf(&b, "createType=%s\n", quotedValue(d.CreateType))
	if d.ParentFileNameHint != "" {
		fmt.Fprintf(&b, "parentFileNameHint=%s\n", quotedValue(d.ParentFileNameHint))
	}
	for _, kv := range d.Other {
		fmt.Fprintf(&b, "%s=%s\n", kv.Key, quotedValue(kv.Value))
	}
	b.WriteString("\n# Extent description\n")
	for _, e := range d.Extents {
		if e.Type == ExtentZero {
			fmt.Fprintf(&b, "%s %d %s\n", e.Access, e.Sectors, e.Type)
			continue
		}
		fmt.Fprintf(&b, "%s %d %s %s", e.Access, e.Sectors, e.Type, quoted(e.File))
		if e.Type.flatLike() {
			fmt.Fprintf(&b, " %d", e.Offset)
		}
		b.WriteByte('\n')
	}
	b.WriteString("\n# The Disk Data Base\n#DDB\n\n")
	for _, kv := range d.DDB {
		fmt.Fprintf(&b, "%s = %s\n", kv.Key, quotedValue(kv.Value))
	}
	return []byte(b.String())
}
