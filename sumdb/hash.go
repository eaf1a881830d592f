package sumdb

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

// MalformedError reports that the bytes to check are not a well-formed
// module file: a zip that fails [modzip.CheckZip] or has non-regular
// entries or entries that do not inflate to their declared size, or a
// go.mod over the go command's size limit.
type MalformedError struct {
	Err error // what is wrong
}

func (e *MalformedError) Error() string { return e.Err.Error() }
func (e *MalformedError) Unwrap() error { return e.Err }

// entryReader names the entry, and its declared size, in read errors:
// archive/zip fails a read with ErrFormat once an entry inflates past its
// declared size, and with ErrChecksum on a CRC-32 mismatch.
type entryReader struct {
	io.ReadCloser
	f *zip.File
}

func (r entryReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("entry %q does not inflate to its declared %d bytes and CRC-32: %w", r.f.Name, r.f.UncompressedSize64, err)
	}
	return n, err
}

func malformed(format string, args ...any) error {
	return &MalformedError{Err: fmt.Errorf(format, args...)}
}

// Hash returns the "h1:" hash of file as the go command writes it in
// go.sum, for the given kind of file of module version m.
//
// A zip is first checked with [modzip.CheckZip] (prefix, clean and
// portable paths, case-fold collisions, the 500 MiB limits) and then
// every entry must be a regular file or directory; while hashing, an entry
// that inflates to more or less than its declared size, or fails its
// CRC-32, is rejected. A go.mod must not exceed [modzip.MaxGoMod]. Such
// failures are [*MalformedError]; any other error is an I/O error reading
// file. Memory use does not depend on the size of the entries: entries of
// up to 2 MiB are inflated ahead on GOMAXPROCS goroutines, holding at most
// 8 MiB, while the current one is hashed. A zip that may have more than
// [DefaultMaxZipEntries] entries is malformed.
func Hash(m module.Version, kind Kind, file string) (string, error) {
	h, _, err := hash(m, kind, file, runtime.GOMAXPROCS(0), DefaultMaxZipEntries)
	return h, err
}

// hash is Hash with the number of goroutines inflating a zip and the
// bound on its entries. For a zip it also returns the hex SHA-256 of the
// file's bytes, read in the same pass that counts its entries.
func hash(m module.Version, kind Kind, file string, workers, maxEntries int) (h1, raw string, err error) {
	info, err := os.Stat(file)
	if err != nil {
		return "", "", fmt.Errorf("hashing %s of %s: %w", kind, m, err)
	}
	switch kind {
	case KindMod:
		if info.Size() > modzip.MaxGoMod {
			return "", "", malformed("go.mod too large (%d bytes; limit is %d bytes)", info.Size(), modzip.MaxGoMod)
		}
		h, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) { return os.Open(file) })
		if err != nil {
			return "", "", fmt.Errorf("hashing go.mod of %s: %w", m, err)
		}
		return h, "", nil
	case KindZip:
		return hashZipRaw(m, file, workers, maxEntries)
	}
	return "", "", fmt.Errorf("hashing %s: unknown kind %v", m, kind)
}

// DefaultMaxZipEntries is the default bound on the entries of a module zip.
// Reading a zip holds every entry's header in memory, about 1.5 KiB each
// with the checks' bookkeeping, so a 141 MB zip of a million empty files
// costs 1.5 GB before any check can reject it. No module known to us comes
// near 65,536 files.
const DefaultMaxZipEntries = 1 << 16

// centralHeader is the signature that starts every central directory
// record of a zip.
var centralHeader = []byte("PK\x01\x02")

// checkEntryCount rejects a zip that may hold more than limit entries,
// before anything parses it. It counts central directory signatures in the
// whole file, an upper bound on the records any zip reader can find
// wherever it believes the directory starts; stored data that happens to
// contain the signature only makes the bound looser.
func checkEntryCount(file string, limit int) error {
	_, err := scanZip(file, limit)
	return err
}

// scanZip is checkEntryCount that also returns the hex SHA-256 of the
// file's bytes.
func scanZip(file string, limit int) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum := sha256.New()
	keep := len(centralHeader) - 1 // tail carried over: a signature may straddle two reads
	buf := make([]byte, keep+1<<20)
	n, have := 0, 0
	for {
		m, err := f.Read(buf[have:])
		if m > 0 {
			sum.Write(buf[have : have+m])
			chunk := buf[:have+m]
			// The carried tail is shorter than a signature and the
			// signature cannot overlap itself, so nothing counts twice.
			if n += bytes.Count(chunk, centralHeader); n > limit {
				return "", malformed("malformed zip: more than %d entries (the limit, sumdb.max_zip_entries)", limit)
			}
			have = copy(buf, chunk[len(chunk)-min(keep, len(chunk)):])
		}
		if err == io.EOF {
			return hex.EncodeToString(sum.Sum(nil)), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// hashZip hashes a module zip after checking its structure. With
// workers > 1 it inflates upcoming entries on other goroutines while
// dirhash hashes the current one.
func hashZip(m module.Version, file string, workers, maxEntries int) (string, error) {
	h, _, err := hashZipRaw(m, file, workers, maxEntries)
	return h, err
}

// hashZipRaw is hashZip that also returns the hex SHA-256 of the file.
func hashZipRaw(m module.Version, file string, workers, maxEntries int) (h1, raw string, err error) {
	if raw, err = scanZip(file, maxEntries); err != nil {
		return "", "", err
	}
	h1, err = hashZipEntries(m, file, workers)
	return h1, raw, err
}

// hashZipEntries is hashZip after the entry count is checked.
func hashZipEntries(m module.Version, file string, workers int) (string, error) {
	if _, err := modzip.CheckZip(m, file); err != nil {
		return "", &MalformedError{Err: fmt.Errorf("malformed zip: %w", err)}
	}
	z, err := zip.OpenReader(file)
	if err != nil {
		return "", malformed("malformed zip: %v", err)
	}
	defer z.Close()
	names := make([]string, 0, len(z.File))
	entries := make(map[string]*zip.File, len(z.File))
	for _, f := range z.File {
		if mode := f.Mode(); !mode.IsRegular() && !mode.IsDir() {
			return "", malformed("malformed zip: entry %q is not a regular file (mode %v)", f.Name, mode)
		}
		names = append(names, f.Name)
		entries[f.Name] = f
	}
	open := func(name string) (io.ReadCloser, error) { return openEntry(entries[name]) }
	if workers > 1 && len(names) > 1 {
		p := startPrefetch(entries, names, workers, prefetchBudget, prefetchMaxEntry)
		defer p.stop() // before z.Close: the workers read from z
		open = p.open
	}
	h, err := dirhash.Hash1(names, open)
	if err != nil {
		// Only an error from the operating system is about the disk; the
		// rest (such as a negative offset read from a forged header) is
		// about the bytes.
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return "", fmt.Errorf("hashing zip of %s: %w", m, err)
		}
		return "", malformed("malformed zip: %v", err)
	}
	return h, nil
}
