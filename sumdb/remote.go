package sumdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
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

// authoritative reports whether the answer is the server's word about the
// path (such as 404 Not Found) rather than a sign that it is unwell.
func (e *StatusError) authoritative() bool {
	return e.Status < 500 && e.Status != http.StatusTooManyRequests && e.Status != http.StatusRequestTimeout
}

// A remote fetches paths from the checksum database, over the first base
// URL that answers. With explicit URLs it tries those in order. Otherwise
// it tries https://<name> and then, like the go command, <proxy>/sumdb/<name>
// on each module proxy that answers 200 to /sumdb/<name>/supported. It
// remembers which base last worked and tries it first.
type remote struct {
	client  *http.Client
	name    string
	bases   []string // fixed base URLs, in order
	proxies []string // module proxies that may serve the database, in order

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

// get returns the body served at path, trying each base in turn while the
// previous one is unreachable or failing. An authoritative non-200 answer
// (such as 404) is returned as a *StatusError at once.
func (r *remote) get(ctx context.Context, path string) ([]byte, error) {
	var errs []error
	tried := map[string]bool{}
	try := func(base string) ([]byte, bool, error) {
		if tried[base] {
			return nil, false, nil
		}
		tried[base] = true
		data, err := r.fetch(ctx, base+path)
		if err == nil {
			r.mu.Lock()
			r.preferred = base
			r.mu.Unlock()
			return data, true, nil
		}
		if se := (*StatusError)(nil); errors.As(err, &se) && se.authoritative() {
			return nil, true, err
		}
		errs = append(errs, err)
		return nil, false, nil
	}
	r.mu.Lock()
	preferred := r.preferred
	r.mu.Unlock()
	candidates := append([]string{preferred}, r.bases...)
	for _, base := range candidates {
		if base == "" {
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
	if len(errs) == 0 {
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
