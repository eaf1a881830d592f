package telemetry_test

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/telemetry"
)

// stallWriter is a log collector that takes nothing until released.
type stallWriter struct {
	entered chan struct{} // receives once per Write, as it starts
	release chan struct{}
	mu      sync.Mutex
	out     bytes.Buffer
}

func (w *stallWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.Write(p)
}

// TestAsyncWriterDoesNotWaitForTheCollector: lines are accepted while the
// collector takes nothing, until the buffer is full; then a writer waits
// for room, and once the collector moves, every line arrives whole, in
// each writer's order.
func TestAsyncWriterDoesNotWaitForTheCollector(t *testing.T) {
	const line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n" // 64 bytes
	sw := &stallWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	a := telemetry.NewAsyncWriter(sw, 64*len(line))
	go a.Write([]byte(line))
	<-sw.entered // the collector holds the first line and takes nothing more

	accepted := make(chan struct{})
	go func() {
		for range 64 { // exactly fill the buffer
			a.Write([]byte(line))
		}
		close(accepted)
	}()
	select {
	case <-accepted:
	case <-time.After(20 * time.Second):
		t.Fatal("Write waited for a stalled collector with the buffer not full")
	}
	full := make(chan struct{})
	go func() {
		a.Write(bytes.Repeat([]byte(line), 2))
		close(full)
	}()
	time.Sleep(50 * time.Millisecond) // (a wrong pass is possible here, never a wrong failure)
	select {
	case <-full:
		t.Fatal("Write did not wait for room in a full buffer")
	default:
	}
	close(sw.release)
	<-full

	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				fmt.Fprintf(a, "writer %d line %03d\n", w, i)
			}
		})
	}
	wg.Wait()
	a.Close()
	fmt.Fprintf(a, "after close\n") // written through, after everything else
	a.Close()                       // harmless

	sw.mu.Lock()
	out := sw.out.String()
	sw.mu.Unlock()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if want := 1 + 64 + 2 + 8*200 + 1; len(lines) != want {
		t.Fatalf("%d lines arrived, want %d", len(lines), want)
	}
	if lines[len(lines)-1] != "after close" {
		t.Errorf("last line %q, want the one written after Close", lines[len(lines)-1])
	}
	next := map[int]int{}
	for _, l := range lines[:len(lines)-1] {
		if l+"\n" == line {
			continue
		}
		var w, i int
		if _, err := fmt.Sscanf(l, "writer %d line %03d", &w, &i); err != nil {
			t.Fatalf("a torn or foreign line %q", l)
		}
		if i != next[w] {
			t.Fatalf("writer %d: line %d arrived where %d was due", w, i, next[w])
		}
		next[w]++
	}
}
