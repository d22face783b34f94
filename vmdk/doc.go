// Package vmdk reads and writes VMware virtual disks (VMDK).
//
// A VMDK disk is a text descriptor plus one or more extents: flat extents
// hold the content as is, sparse extents hold it in grains (64 KiB by
// default) found through a grain directory of grain tables, and a child
// disk falls through to its parent (backing file) wherever it stores
// nothing. The format is VMware's Virtual Disk Format 5.0 technote; this
// package follows QEMU's block/vmdk.c where they differ and avoids its
// known quirks.
//
// # Subformats
//
// Open reads monolithicSparse, monolithicFlat, twoGbMaxExtentSparse,
// twoGbMaxExtentFlat and streamOptimized images, the descriptors ESXi
// writes (vmfs, vmfsThin, vmfsPreallocated, vmfsEagerZeroedThick and
// vmfsSparse (COWD) deltas, version 3 with change tracking included),
// seSparse snapshot deltas (read-only, as ESXi writes them on VMFS6;
// opened through their descriptor, which names the parent), custom
// descriptors with FLAT, VMFS (read as flat), SPARSE, VMFSSPARSE,
// SESPARSE, ZERO and NOACCESS extents, and backing chains of any of them.
// OpenFS opens the same through an fs.FS (an HTTP datastore, an archive),
// read-only. Create
// writes the five hosted subformats ([Subformat]); NewStreamWriter writes a
// streamOptimized image to any io.Writer and NewStreamReader reads one
// from any io.Reader, without seeking. Disks opened with ReadWrite accept
// writes except into compressed (streamOptimized) extents. Check verifies
// what qemu-img check does not and repairs what is safe to repair;
// Commit and Rebase change a chain.
//
// Not supported (refused with [ErrUnsupported]): writes into seSparse
// extents, seSparse deltas with an unreplayed journal, sparse header
// versions above 3, compression other than deflate, writes into
// compressed extents, and images that name other files when opened with
// OpenReaderAt. Disks whose data is in no file are refused when their
// descriptor is parsed, with the way forward in the message: vSAN objects
// (VSANSPARSE extents, vsan:// names) and raw device mappings and raw
// disks (createTypes vmfsRawDeviceMap and vmfsPassthroughRawDeviceMap,
// VMFSRDM, VMFSRDMP and VMFSRAW extents), whose data is on a LUN.
//
// # Safety model
//
// Images are untrusted input. Every size, count and offset read from a
// descriptor, header, grain directory or grain table is bounded before it
// is used, so a crafted image fails with [ErrCorrupt] (or
// [ErrUnsupported]) instead of allocating without limit, reading out of
// bounds or panicking; FuzzOpen and FuzzStreamReader hold the package to
// that. Extent and parent paths are confined to the descriptor's own
// directory, or to [Options].Root when set, and any other path is refused
// with [ErrInsecurePath] unless [Options].AllowUnsafePaths says the image
// is trusted.
//
// Writes are crash-safe: a new grain's data is written before the grain
// table entry that points at it, so an interrupted writer leaves at most
// unreferenced grains (which Check reports as leaks), never a table entry
// pointing at garbage. The first write after Open gives the disk a new CID
// before any data changes, so children made from the old content see that
// their chain is broken instead of reading a mix. Flush is durable: what
// was written before it is on stable storage when it returns (grains
// rewritten in place included), and so is an image Create returned (its
// directory is synced too). This holds under power loss, not only when the
// process dies: the tests replay every sync and cut power between them. A
// [StreamWriter] only writes; its output is complete once Close returned
// and the caller synced the file, and a stream cut short before that has no
// checksums to tell a lost grain table from an empty one, so write it under
// a temporary name and rename it into place after the sync.
//
// # Concurrency
//
// A [Disk] is safe for concurrent ReadAt, BlockStatus and Map calls.
// WriteAt and Flush are serialised with each other and may run alongside
// reads; a read of a range being written at the same time returns the old
// or the new content. A [StreamReader] or [StreamWriter] is for one
// goroutine; it uses others internally to inflate or compress grains.
//
// # Errors
//
// Errors wrap the sentinels in errors.go ([ErrCorrupt], [ErrUnsupported],
// [ErrChainBroken], [ErrInsecurePath], [ErrNoAccess], [ErrNotVMDK],
// [ErrInvalidOptions], [ErrOutOfRange], [ErrReadOnly]), a context's error
// or an I/O error, so callers branch with errors.Is.
//
// Options structs ([Options], [CreateOptions], [StreamOptions],
// [CheckOptions], [RebaseOptions]) are passed by value; their zero value
// is the default.
package vmdk
