package testworld

import (
	"net/http"
	"strings"
	"testing"
)

// An override is one handler that replaces a host's own for a path prefix.
type override struct {
	prefix string
	h      http.Handler
}

// Override makes host (any host the world serves, CDNHost included) answer
// requests whose URL path starts with pathPrefix with h instead of its own
// handler, until t ends. It is how a test makes one proxy misbehave for one
// module: answer a redirect or 410 Gone, gzip the body, or reset the
// stream mid-file. Where several overrides of host match, the longest
// prefix wins; an override for the same host and prefix replaces the
// earlier one until its own t ends. Requests answered by h are still
// counted by Requests and checked by Leaks. h runs on the world's server,
// which speaks HTTP/2 to clients that offer it.
func (w *World) Override(t testing.TB, host, pathPrefix string, h http.Handler) {
	t.Helper()
	host = strings.ToLower(host)
	o := &override{prefix: pathPrefix, h: h}
	w.mu.Lock()
	if w.over == nil {
		w.over = make(map[string][]*override)
	}
	w.over[host] = append(w.over[host], o)
	w.mu.Unlock()
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		list := w.over[host]
		for i, x := range list {
			if x == o {
				w.over[host] = append(list[:i:i], list[i+1:]...)
				break
			}
		}
	})
}

// overrideFor returns the handler that overrides host's own for path, or
// nil. The latest of equally long prefixes wins. w.mu must be held.
func (w *World) overrideFor(host, path string) http.Handler {
	var best *override
	for _, o := range w.over[host] {
		if strings.HasPrefix(path, o.prefix) && (best == nil || len(o.prefix) >= len(best.prefix)) {
			best = o
		}
	}
	if best == nil {
		return nil
	}
	return best.h
}
