package testworld

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"

	"golang.org/x/mod/module"
)

// DirectEnv returns the environment under which the go command and git
// fetch modules straight from the world's code hosts, with no gateway:
// GOPROXY=direct, GOSUMDB=off, HTTPS_PROXY=ConnectProxyURL, the world's
// root in SSL_CERT_FILE (the go command) and GIT_SSL_CAINFO (git), no git
// prompts and no system git configuration, and GOPRIVATE, GONOPROXY and
// GOINSECURE empty.
func (w *World) DirectEnv() []string {
	return []string{
		"GOPROXY=direct",
		"GOSUMDB=off",
		"GOPRIVATE=",
		"GONOPROXY=",
		"GOINSECURE=",
		"HTTPS_PROXY=" + w.ConnectProxyURL,
		"NO_PROXY=",
		"SSL_CERT_FILE=" + w.RootsFile,
		"GIT_SSL_CAINFO=" + w.RootsFile,
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
	}
}

// GoDirect runs the real go command, `go mod download -json mods...`, as
// GoModDownload does (fresh GOPATH, module cache and HOME) under DirectEnv
// and then env, whose entries win: so the go command resolves each module
// on the world's code hosts, by ?go-get=1 where it must, and fetches it
// with git over HTTPS through the world's blind CONNECT proxy. To reach a
// private repository, pass a HOME holding a .netrc with its GitRepo.Netrc.
// It returns standard output (standard error too, on failure).
func (w *World) GoDirect(t testing.TB, env []string, mods ...string) ([]byte, error) {
	t.Helper()
	return GoModDownload(t, append(w.DirectEnv(), env...), mods...)
}

// A Download is one module as `go mod download -json` reports it.
type Download struct {
	Path     string // module path
	Version  string // resolved version, e.g. "v2.0.0+incompatible"
	Error    string // set when the download failed
	Info     string // absolute path to the cached .info file
	GoMod    string // absolute path to the cached .mod file
	Zip      string // absolute path to the cached .zip file
	Dir      string // absolute path to the extracted module
	Sum      string // checksum of the zip, "h1:..."
	GoModSum string // checksum of the go.mod, "h1:..."
}

// ParseDownloads decodes the output of `go mod download -json` (one JSON
// object per module, as GoDirect and GoModDownload return it). The output
// of a failed command ends in the go command's standard error, which is
// not JSON: decoding stops there without error.
func ParseDownloads(out []byte) ([]Download, error) {
	var ds []Download
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var d Download
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return ds, nil
		}
		if err != nil {
			if len(ds) > 0 || dec.InputOffset() > 0 {
				return ds, nil // standard error after the JSON
			}
			return nil, fmt.Errorf("decoding go mod download -json output: %w", err)
		}
		ds = append(ds, d)
	}
}

// LogGit computes the checksums of modPath@version with the real go
// command fetching it straight from the world's code hosts (GoDirect), and
// makes the world's honest checksum database log them (Log) under the
// version the go command resolved. It returns them. This is the
// independent oracle for direct-git verification: the hashes come from the
// go command and git, never from sumgate's code. It fails t if the go
// command fails or resolves another module or version than asked; a
// repository changed afterwards (a moved tag) no longer matches the log.
func (w *World) LogGit(t testing.TB, modPath, version string) (zipHash, modHash string) {
	t.Helper()
	out, err := w.GoDirect(t, nil, modPath+"@"+version)
	ds, perr := ParseDownloads(out)
	if err != nil || perr != nil || len(ds) != 1 || ds[0].Error != "" || ds[0].Sum == "" || ds[0].GoModSum == "" {
		t.Fatalf("testworld: LogGit %s@%s: go mod download: %v %v\n%s", modPath, version, err, perr, out)
	}
	d := ds[0]
	if d.Path != modPath || d.Version != version {
		t.Fatalf("testworld: LogGit %s@%s: the go command resolved %s@%s", modPath, version, d.Path, d.Version)
	}
	w.Log(module.Version{Path: d.Path, Version: d.Version}, d.Sum, d.GoModSum)
	return d.Sum, d.GoModSum
}
