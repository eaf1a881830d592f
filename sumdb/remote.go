package sumdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// maxRemoteBody bounds one response from the checksum database. A lookup
// answer is a few hundred bytes and a tile at most tens of kilobytes.
const maxRemoteBody = 1 << 20

// StatusError is a non-200 answer from the checksum database or a module
// proxy.
type StatusError struct {
	URL    string // what was fetched
	Status int    // HTTP status code
	Body   string // start of the response body, for the message
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("GET %s: %d %s", e.URL, e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// final reports whether err, from fetching path, is the database's last
// word rather than one source failing: a 404 or 410 to a /lookup/ path,
// which says the database has no record of that module version. Any other
// status (401, 403, 429, 5xx, …), and a 404 for a tile or /latest, is only
// that source's failure.
func final(path string, err error) bool {
	se := (*StatusError)(nil)
	return errors.As(err, &se) && strings.HasPrefix(path, "/lookup/") &&
		(se.Status == http.StatusNotFound || se.Status == http.StatusGone)
}

// plausibleAnswer refuses a 200 body that cannot be the database's answer
// to path, so that a firewall's or an outage's 200 page is a failure of
// that source rather than the database's word: /latest must be a tree head
// signed with the database's key, a /lookup/ a record followed by such a
// tree head, and a hash tile exactly its width of hashes. The x/mod client
// then checks every answer against the stored tree, as before.
func plausibleAnswer(verifiers note.Verifiers, path string, data []byte) error {
	var err error
	switch {
	case path == "/latest":
		_, err = note.Open(data, verifiers)
	case strings.HasPrefix(path, "/lookup/"):
		var tree []byte
		if _, _, tree, err = tlog.ParseRecord(data); err == nil {
			_, err = note.Open(tree, verifiers)
		}
	case strings.HasPrefix(path, "/tile/"):
		var t tlog.Tile
		if t, err = tlog.ParseTilePath(path[1:]); err == nil && t.L >= 0 && len(data) != t.W*tlog.HashSize {
			err = fmt.Errorf("%d bytes, want %d", len(data), t.W*tlog.HashSize)
		}
	}
	if err != nil {
		return fmt.Errorf("not an answer of the checksum database: %w", err)
	}
	return nil
}

// A remote fetches paths from the checksum database, over the first
// source (base URL) that answers. With explicit URLs it tries those in
// order. Otherwise it tries https://<name> and then, like the go command,
// <proxy>/sumdb/<name> on each module proxy that answers 200 to
// /sumdb/<name>/supported. It remembers which base last answered and
// tries it first; a base that fails is passed over, and the next one to
// answer takes its place.
type remote struct {
	client  *http.Client
	name    string
	bases   []string                             // fixed base URLs, in order
	proxies []string                             // module proxies that may serve the database, in order
	accept  func(path string, data []byte) error // vets a 200 body before it counts as an answer; nil accepts all

	mu        sync.Mutex
	preferred string          // base that last answered
	supported map[string]bool // proxy base URL -> answered 200 to supported
}

func newRemote(client *http.Client, name string, urls, proxies []string) *remote {
	r := &remote{client: client, name: name, supported: map[string]bool{}}
	if len(urls) > 0 {
		for _, u := range urls {
			r.bases = append(r.bases, strings.TrimSuffix(u, "/"))
		}
	} else {
		r.bases = []string{"https://" + name}
		for _, p := range proxies {
			r.proxies = append(r.proxies, strings.TrimSuffix(p, "/"))
		}
	}
	return r
}

// source returns the base that last answered, "" if none has.
func (r *remote) source() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.preferred
}

// get returns the body served at path, asking each source in turn until
// one answers. Only two things are answers: a 200 whose body r.accept
// takes (the x/mod client then authenticates it), which makes that source
// the preferred one; and a 404 or 410 to a /lookup/ path ([final]),
// returned as a *StatusError at once. Every other failure of a source
// moves on to the next; when all have failed, the error says so.
func (r *remote) get(ctx context.Context, path string) ([]byte, error) {
	var errs []error
	tried := map[string]bool{}
	try := func(base string) ([]byte, bool, error) {
		tried[base] = true
		data, err := r.fetch(ctx, base+path)
		if err == nil && r.accept != nil {
			if aerr := r.accept(path, data); aerr != nil {
				err = fmt.Errorf("GET %s: %w", base+path, aerr)
			}
		}
		switch {
		case err == nil:
			r.mu.Lock()
			r.preferred = base
			r.mu.Unlock()
			return data, true, nil
		case final(path, err):
			return nil, true, err
		}
		errs = append(errs, err)
		return nil, false, nil
	}
	for _, base := range append([]string{r.source()}, r.bases...) {
		if base == "" || tried[base] || ctx.Err() != nil {
			continue
		}
		if data, done, err := try(base); done {
			return data, err
		}
	}
	for _, p := range r.proxies {
		if ctx.Err() != nil {
			break
		}
		base := p + "/sumdb/" + r.name
		if tried[base] || !r.proxySupports(ctx, p) {
			continue
		}
		if data, done, err := try(base); done {
			return data, err
		}
	}
	switch {
	case len(errs) > 0:
	case ctx.Err() != nil:
		errs = append(errs, ctx.Err())
	default:
		errs = append(errs, fmt.Errorf("no module proxy serves checksum database %s", r.name))
	}
	if len(errs) == 1 {
		return nil, fmt.Errorf("checksum database %s unreachable: %w", r.name, errs[0])
	}
	return nil, fmt.Errorf("checksum database %s unreachable at %d URLs; first: %w", r.name, len(errs), errs[0])
}

// proxySupports reports whether proxy p answers 200 to
// /sumdb/<name>/supported. A yes is remembered; a no is asked again next
// time, so a passing outage does not disable the fallback for good.
func (r *remote) proxySupports(ctx context.Context, p string) bool {
	r.mu.Lock()
	ok := r.supported[p]
	r.mu.Unlock()
	if ok {
		return true
	}
	if _, err := r.fetch(ctx, p+"/sumdb/"+r.name+"/supported"); err != nil {
		return false
	}
	r.mu.Lock()
	r.supported[p] = true
	r.mu.Unlock()
	return true
}

// fetch GETs url and returns its body, which must be a 200 of at most
// maxRemoteBody bytes.
func (r *remote) fetch(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRemoteBody+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		if len(data) > 200 {
			data = data[:200]
		}
		return nil, &StatusError{URL: url, Status: resp.StatusCode, Body: strings.TrimSpace(string(data))}
	}
	if len(data) > maxRemoteBody {
		return nil, fmt.Errorf("GET %s: response larger than %d bytes", url, maxRemoteBody)
	}
	return data, nil
}
