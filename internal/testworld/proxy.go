package testworld

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/sumgate/sumgate/internal/config"
	"golang.org/x/mod/module"
)

// proxyHandler serves the GOPROXY protocol for the corpus under prefix
// ("" or e.g. "/goproxy"), and the checksum database under
// prefix + "/sumdb/sum.golang.org/".
func (w *World) proxyHandler(prefix string) http.Handler {
	sumdbPrefix := prefix + "/sumdb/" + config.SumDBName
	db := http.StripPrefix(sumdbPrefix, http.HandlerFunc(w.serveSumDB))
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == sumdbPrefix+"/supported":
			rw.WriteHeader(http.StatusOK)
		case strings.HasPrefix(p, sumdbPrefix+"/"):
			db.ServeHTTP(rw, r)
		case strings.HasPrefix(p, prefix+"/"):
			w.serveModule(rw, p[len(prefix)+1:])
		default:
			http.Error(rw, "not found: "+p, http.StatusNotFound)
		}
	})
}

// serveModule answers one GOPROXY request; p is the URL path after the
// proxy's base: <escaped path>/@v/list, /@latest, /@v/<version>.info|.mod|.zip.
func (w *World) serveModule(rw http.ResponseWriter, p string) {
	escPath, file, ok := strings.Cut(p, "/@v/")
	if !ok {
		if escPath, ok = strings.CutSuffix(p, "/@latest"); !ok {
			http.Error(rw, "not found: "+p, http.StatusNotFound)
			return
		}
		file = "@latest"
	}
	modPath, err := module.UnescapePath(escPath)
	if err != nil {
		http.Error(rw, "not found: "+err.Error(), http.StatusNotFound)
		return
	}
	var versions []*Module // in semver order, as in w.corpus
	for _, m := range w.Modules() {
		if m.Path == modPath {
			versions = append(versions, m)
		}
	}
	if len(versions) == 0 {
		http.Error(rw, "not found: module "+modPath+": no such module in test world", http.StatusNotFound)
		return
	}

	if file == "list" {
		rw.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		for _, m := range versions {
			fmt.Fprintln(rw, m.Version.Version)
		}
		return
	}
	m, ext := versions[len(versions)-1], "info"
	if file != "@latest" {
		var escVers string
		if i := strings.LastIndex(file, "."); i >= 0 {
			escVers, ext = file[:i], file[i+1:]
		}
		vers, err := module.UnescapeVersion(escVers)
		if m = w.Module(modPath, vers); err != nil || m == nil {
			http.Error(rw, "not found: "+modPath+"@"+escVers+": unknown version", http.StatusNotFound)
			return
		}
	}
	switch ext {
	case "info":
		rw.Header().Set("Content-Type", "application/json")
		json.NewEncoder(rw).Encode(struct{ Version, Time string }{m.Version.Version, infoTime})
	case "mod":
		rw.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		rw.Write(m.Mod)
	case "zip":
		rw.Header().Set("Content-Type", "application/zip")
		rw.Write(m.Zip)
	default:
		http.Error(rw, "not found: "+p, http.StatusNotFound)
	}
}
