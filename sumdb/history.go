package sumdb

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/mod/module"
)

// historyBucket is the resolution of the tree-head history: at most one
// entry is kept per bucket, the first head seen in it. A cooldown decided
// on the history is late by at most this much, never early.
const historyBucket = 10 * time.Minute

// A Sighting is one entry of the tree-head history: a tree of size Size
// was verified at time Seen, so every record with an index below Size
// was logged at or before Seen.
type Sighting struct {
	Size int64
	Seen time.Time
}

// history is the tree-head history: when this verifier, or any replica
// sharing its state, first verified a tree of at least some size. It is
// the evidence a cooldown needs that a publisher cannot forge (a
// version's .info time is the publisher's word): a record whose index is
// below the size of a tree seen before a time was logged before that
// time. It lives in the data directory (file "history", one line
// "<size> <unix seconds>" per entry, appended) or, with shared state, in
// etcd (key history/<unix seconds of the bucket>, value "<size> <unix
// seconds>", the size zero-padded, raised by any replica that saw a
// larger tree in that bucket).
type history struct {
	mu      sync.Mutex
	entries []Sighting // sorted by Seen, sizes non-decreasing
	last    time.Time  // bucket of the newest entry
	file    string     // the file, for the file backend
	shared  *shared    // the shared state, or nil
}

// loadHistory reads the history from st's directory, or from etcd. An
// entry dated after now is no sighting yet: a clock
// ahead, or an entry planted in etcd. It is dropped, so that it neither
// stops this replica from recording the buckets until then nor becomes
// evidence when its time comes.
func loadHistory(ctx context.Context, st *store, sh *shared, now time.Time) (*history, error) {
	h := &history{file: filepath.Join(st.dir, "history"), shared: sh}
	if sh != nil {
		ctx, cancel := context.WithTimeout(ctx, sh.timeout)
		defer cancel()
		resp, err := sh.c.Get(ctx, sh.dir+"history/", clientv3.WithPrefix())
		if err != nil {
			return nil, unavailable("reading the tree-head history", err)
		}
		for _, kv := range resp.Kvs {
			if s, ok := parseSighting(kv.Value); ok {
				h.entries = append(h.entries, s)
			}
		}
	} else {
		data, err := os.ReadFile(h.file)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading the tree-head history: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if s, ok := parseSighting(sc.Bytes()); ok {
				h.entries = append(h.entries, s)
			}
		}
	}
	h.entries = slices.DeleteFunc(h.entries, func(s Sighting) bool { return s.Seen.After(now) })
	h.sort()
	if n := len(h.entries); n > 0 {
		h.last = h.entries[n-1].Seen.Truncate(historyBucket)
	}
	return h, nil
}

func parseSighting(b []byte) (Sighting, bool) {
	size, secs, ok := bytes.Cut(bytes.TrimSpace(b), []byte(" "))
	n, err1 := strconv.ParseInt(string(size), 10, 64)
	t, err2 := strconv.ParseInt(string(secs), 10, 64)
	if !ok || err1 != nil || err2 != nil || n < 0 {
		return Sighting{}, false
	}
	return Sighting{Size: n, Seen: time.Unix(t, 0).UTC()}, true
}

// formatSighting writes a sighting as "<size> <unix seconds>\n", the
// size zero-padded to 20 digits, so that comparing two values as strings
// (as an etcd transaction does) compares their sizes.
func formatSighting(s Sighting) string {
	return fmt.Sprintf("%020d %d\n", s.Size, s.Seen.Unix())
}

// sort orders the entries by time, and drops an entry whose size is
// below an earlier one's: it says nothing the earlier one does not.
func (h *history) sort() {
	slices.SortFunc(h.entries, func(a, b Sighting) int { return a.Seen.Compare(b.Seen) })
	kept := h.entries[:0]
	for _, s := range h.entries {
		if n := len(kept); n > 0 && s.Size <= kept[n-1].Size {
			continue
		}
		kept = append(kept, s)
	}
	h.entries = kept
}

// saw records that a tree of size was verified at now, if it is larger
// than the newest one recorded. Each bucket keeps its largest tree, with
// when that one was seen: a record logged after the bucket's first tree
// is then still dated (by the bucket's last), and one logged before it is
// dated a little later than it could be, never earlier. A failure to
// record is returned; it costs only resolution.
func (h *history) saw(ctx context.Context, size int64, now time.Time) error {
	now = now.UTC().Truncate(time.Second)
	bucket := now.Truncate(historyBucket)
	h.mu.Lock()
	n := len(h.entries)
	if size <= 0 || (n > 0 && size <= h.entries[n-1].Size) {
		h.mu.Unlock()
		return nil
	}
	s := Sighting{Size: size, Seen: now}
	if n > 0 && !bucket.After(h.last) {
		h.entries[n-1] = s
	} else {
		h.entries = append(h.entries, s)
		h.last = bucket
	}
	h.sort()
	h.mu.Unlock()
	if h.shared != nil {
		ctx, cancel := context.WithTimeout(ctx, h.shared.timeout)
		defer cancel()
		key := h.shared.dir + "history/" + strconv.FormatInt(bucket.Unix(), 10)
		put := clientv3.OpPut(key, formatSighting(s))
		// Created, or raised to the larger tree: never lowered by a
		// replica that saw less in the same bucket.
		_, err := h.shared.c.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(put).
			Else(clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "<", formatSighting(s))}, []clientv3.Op{put}, nil)).
			Commit()
		if err != nil {
			return unavailable("recording the tree-head history", err)
		}
		return nil
	}
	f, err := os.OpenFile(h.file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("recording the tree-head history: %w", err)
	}
	_, err = f.WriteString(formatSighting(s))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("recording the tree-head history: %w", err)
	}
	return nil
}

// after returns the first sighting of a tree larger than index, and
// whether an earlier sighting (of a tree no larger) exists: without one,
// the record may have been logged at any time before the history began.
func (h *history) after(index int64) (s Sighting, bounded, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, _ := slices.BinarySearchFunc(h.entries, index, func(s Sighting, index int64) int {
		if s.Size > index {
			return 1
		}
		return -1
	})
	if i == len(h.entries) {
		return Sighting{}, false, false
	}
	return h.entries[i], i > 0, true
}

// LoggedBy returns when m was logged, on evidence a publisher cannot
// forge (a version's .info time is the publisher's word): the time this
// verifier, or a replica sharing its state, first verified a tree that
// contains m's record, found from the record's index (in m's proof) and
// the tree-head history. The record was logged no later than since, and
// after the sighting before it, if any; a record beyond every tree
// recorded is dated now. ok is false, and evidence says why, if m was
// never proven, its proof predates record indexes, or the history began
// after the record was logged (a new installation): the caller then
// falls back to other evidence. It never touches the network.
func (v *Verifier) LoggedBy(m module.Version) (since time.Time, evidence string, ok bool) {
	p, found := v.store.readProven(m)
	if !found || p.Record == nil {
		return time.Time{}, "the version's record index in the checksum database is not known here", false
	}
	s, bounded, found := v.history.after(*p.Record)
	switch {
	case !found:
		// Newer than every tree recorded (the recording failed, say):
		// logged no earlier than now, as far as this history can tell,
		// which is never too early.
		now := v.now().UTC()
		return now, fmt.Sprintf("checksum database record %d is beyond every tree in the tree-head history: dated now, %s", *p.Record, now.Format(time.RFC3339)), true
	case !bounded:
		return time.Time{}, fmt.Sprintf("checksum database record %d is older than the tree-head history, which begins at %s", *p.Record, s.Seen.Format(time.RFC3339)), false
	}
	return s.Seen, fmt.Sprintf("checksum database record %d is in the tree of size %d first seen at %s", *p.Record, s.Size, s.Seen.Format(time.RFC3339)), true
}

// HistorySpans reports whether the tree-head history began at least d
// before now, by the verifier's clock: whether a version it cannot date
// ([Verifier.LoggedBy]) could still be younger than d only for want of
// a proof, not because the history is too short to tell.
func (v *Verifier) HistorySpans(d time.Duration) bool {
	v.history.mu.Lock()
	defer v.history.mu.Unlock()
	return len(v.history.entries) > 0 && !v.now().Before(v.history.entries[0].Seen.Add(d))
}

// History returns the tree-head history, oldest first.
func (v *Verifier) History() []Sighting {
	v.history.mu.Lock()
	defer v.history.mu.Unlock()
	return slices.Clone(v.history.entries)
}
