package sumdb

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"

	"golang.org/x/sync/semaphore"
)

const (
	// prefetchBudget bounds the memory holding inflated entries that wait
	// to be hashed, per zip. A gateway checks many zips at once, so this
	// is kept small: a few entries ahead is all the overlap needs.
	prefetchBudget = 8 << 20
	// prefetchMaxEntry is the largest entry inflated ahead; larger ones are
	// inflated when dirhash reaches them, streaming.
	prefetchMaxEntry = 2 << 20
)

// openEntry opens a zip entry for hashing; read errors name the entry.
func openEntry(f *zip.File) (io.ReadCloser, error) {
	r, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("entry %q: %w", f.Name, err)
	}
	return entryReader{r, f}, nil
}

// A prefetch inflates small zip entries ahead of dirhash.Hash1, in the
// (sorted) order it reads them, on several goroutines and within
// prefetchBudget bytes. An entry dirhash asks for before it was handed to a
// worker, or one too large to prefetch, is opened directly instead, so a
// different reading order costs speed but never correctness or progress.
type prefetch struct {
	sem    *semaphore.Weighted // bytes of inflated entries held
	cancel context.CancelFunc  // stops the dispatcher
	wg     sync.WaitGroup      // dispatcher and workers

	entries map[string]*zip.File // every entry by name

	mu      sync.Mutex
	futures map[string]*future // prefetchable entries not yet opened, by name

	// pools recycle inflate buffers by power-of-two size class, from 4 KiB
	// to prefetchMaxEntry: otherwise inflating a large module ahead
	// allocates its whole content again, and a busy gateway's heap grows
	// with the garbage.
	pools [bufClasses]sync.Pool
}

// A future is one entry's inflated content, or the error inflating it.
type future struct {
	f          *zip.File
	taken      bool          // open has claimed it; guarded by prefetch.mu
	dispatched bool          // handed to a worker; guarded by prefetch.mu
	done       chan struct{} // closed once data and err are set
	data       []byte
	err        error
}

// startPrefetch starts inflating the entries of up to maxEntry bytes on
// workers goroutines, holding at most budget (>= maxEntry) bytes.
func startPrefetch(entries map[string]*zip.File, names []string, workers int, budget, maxEntry int64) *prefetch {
	ctx, cancel := context.WithCancel(context.Background())
	p := &prefetch{sem: semaphore.NewWeighted(budget), cancel: cancel, entries: entries, futures: map[string]*future{}}
	order := slices.Sorted(slices.Values(names)) // dirhash.Hash1's order
	var queue []*future
	for _, name := range order {
		f := entries[name]
		if f.UncompressedSize64 <= uint64(maxEntry) {
			fu := &future{f: f, done: make(chan struct{})}
			p.futures[name] = fu
			queue = append(queue, fu)
		}
	}
	jobs := make(chan *future)
	p.wg.Add(1 + workers)
	go func() { // dispatcher: reserves memory in order, so progress is guaranteed
		defer p.wg.Done()
		defer close(jobs)
		for _, fu := range queue {
			size := int64(fu.f.UncompressedSize64)
			if p.sem.Acquire(ctx, size) != nil {
				return
			}
			p.mu.Lock()
			if fu.taken {
				p.mu.Unlock()
				p.sem.Release(size)
				continue
			}
			fu.dispatched = true
			p.mu.Unlock()
			select {
			case jobs <- fu:
			case <-ctx.Done():
				fu.err = ctx.Err()
				close(fu.done)
				return
			}
		}
	}()
	for range workers {
		go func() {
			defer p.wg.Done()
			for fu := range jobs {
				fu.data, fu.err = p.inflate(fu.f)
				close(fu.done)
			}
		}()
	}
	return p
}

// inflate reads a whole entry, which archive/zip stops just past its
// declared size, into a pooled buffer.
func (p *prefetch) inflate(f *zip.File) ([]byte, error) {
	r, err := openEntry(f)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := p.getBuf(int(f.UncompressedSize64))
	n, err := io.ReadFull(r, buf)
	if err == nil {
		// The declared size is read; the entry must end here (archive/zip
		// checks the CRC and the size at EOF).
		var one [1]byte
		if m, rerr := r.Read(one[:]); m != 0 || rerr != io.EOF {
			err = rerr
			if m != 0 || err == nil {
				err = fmt.Errorf("entry %q: longer than its declared %d bytes", f.Name, f.UncompressedSize64)
			}
		}
	} else if err == io.ErrUnexpectedEOF {
		err = fmt.Errorf("entry %q: shorter than its declared %d bytes", f.Name, f.UncompressedSize64)
	}
	return buf[:n], err
}

const (
	minBufShift = 12 // 4 KiB
	bufClasses  = 10 // up to 2 MiB (prefetchMaxEntry)
)

func bufClass(n int) int {
	c := 0
	for size := 1 << minBufShift; size < n && c < bufClasses-1; size <<= 1 {
		c++
	}
	return c
}

// getBuf returns a buffer of length n, pooled when n fits a class.
func (p *prefetch) getBuf(n int) []byte {
	c := bufClass(n)
	if n > 1<<(minBufShift+c) {
		return make([]byte, n)
	}
	if b, ok := p.pools[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<(minBufShift+c))
}

// putBuf returns a buffer from getBuf to its pool.
func (p *prefetch) putBuf(b []byte) {
	c := bufClass(cap(b))
	if cap(b) != 1<<(minBufShift+c) {
		return // not from a pool
	}
	b = b[:0]
	p.pools[c].Put(&b)
}

// open returns the entry's content for dirhash.
func (p *prefetch) open(name string) (io.ReadCloser, error) {
	p.mu.Lock()
	fu := p.futures[name]
	delete(p.futures, name) // so that its memory goes once it is hashed
	dispatched := false
	if fu != nil {
		fu.taken = true
		dispatched = fu.dispatched
	}
	p.mu.Unlock()
	if !dispatched {
		f := p.entries[name]
		if f == nil {
			return nil, fmt.Errorf("entry %q: not in zip", name)
		}
		return openEntry(f)
	}
	<-fu.done
	data := fu.data
	fu.data = nil // the dispatcher's queue still points at fu
	release := func() {
		p.putBuf(data)
		p.sem.Release(int64(fu.f.UncompressedSize64))
	}
	if fu.err != nil {
		release()
		return nil, fu.err
	}
	return &heldReader{Reader: bytes.NewReader(data), release: release}, nil
}

// stop ends the prefetch and waits for its goroutines.
func (p *prefetch) stop() {
	p.cancel()
	p.wg.Wait()
}

// heldReader returns its memory to the budget when closed.
type heldReader struct {
	*bytes.Reader
	once    sync.Once
	release func()
}

func (r *heldReader) Close() error {
	r.once.Do(r.release)
	return nil
}
