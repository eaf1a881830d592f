package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/testworld"
)

// writeConfig writes a configuration file that points sumgate at w, with
// extra appended verbatim, and returns its path.
func writeConfig(t testing.TB, w *testworld.World, proxies []string, extra string) string {
	t.Helper()
	return writeConfigResolve(t, w, proxies, w.Resolve, extra)
}

// writeConfigResolve is writeConfig with upstream.resolve set to resolve.
func writeConfigResolve(t testing.TB, w *testworld.World, proxies []string, resolve map[string]string, extra string) string {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %s\n", filepath.Join(dir, "data"))
	fmt.Fprintf(&b, "module_proxies: [%s]\n", strings.Join(proxies, ", "))
	fmt.Fprintf(&b, "private: %s\n", testworld.PrivatePattern)
	fmt.Fprintf(&b, "sumdb:\n  key: %s\n", w.SumDBKey)
	fmt.Fprintf(&b, "upstream:\n  roots: %s\n  resolve:\n", w.RootsFile)
	for host, addr := range resolve {
		fmt.Fprintf(&b, "    %s: \"%s\"\n", host, addr) // an IPv6 address starts with [
	}
	b.WriteString(extra)
	file := filepath.Join(dir, "sumgate.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestVerifyCommand(t *testing.T) {
	w := testworld.New(t)
	all := append([]string{w.ProxyURL}, w.MirrorURLs...)
	cfg := writeConfig(t, w, all, "")
	fresh, forked := writeConfig(t, w, all, ""), writeConfig(t, w, all, "")
	aliyunOnly := writeConfig(t, w, []string{w.MirrorURLs[len(w.MirrorURLs)-1]}, "")
	good := w.Module(testworld.GoodPath, testworld.Version)
	tampered := w.Module(testworld.TamperedModPath, testworld.Version)
	badKey := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(badKey, []byte("data_dir: x\nsumdb:\n  kee: y\n"), 0o600)

	tests := []struct {
		name       string
		before     []string // run first, in honest mode
		args       []string
		mode       testworld.SumDBMode
		wantStatus int
		wantOut    []string // substrings of stdout
		wantErr    string   // substring of stderr
	}{
		{name: "genuine", args: []string{"-config", cfg, "example.com/good@v1.0.0"}, wantStatus: 0,
			wantOut: []string{"example.com/good@v1.0.0 (zip): verified: " + good.ZipHash, "(go.mod): verified: " + good.ModHash}},
		{name: "mirror with path prefix", args: []string{"-config", aliyunOnly, "example.com/good@v1.1.0"}, wantStatus: 0,
			wantOut: []string{"(zip): verified", "(go.mod): verified"}},
		{name: "tampered zip", args: []string{"-config", cfg, testworld.TamperedZipPath + "@v1.0.0"}, wantStatus: 1,
			wantOut: []string{"(zip): checksum mismatch: downloaded h1:", "(go.mod): verified"}, wantErr: "tampered content"},
		{name: "tampered go.mod", args: []string{"-config", cfg, testworld.TamperedModPath + "@v1.0.0"}, wantStatus: 1,
			wantOut: []string{"(go.mod): checksum mismatch", "checksum database has " + tampered.ModHash}},
		{name: "unknown version", args: []string{"-config", cfg, testworld.UnknownPath + "@v1.0.0"}, wantStatus: 1,
			wantOut: []string{"not in the checksum database"}},
		{name: "private, nothing downloaded", args: []string{"-config", cfg, testworld.PrivatePath + "@v1.0.0"}, wantStatus: 0,
			wantOut: []string{"private module"}},
		{name: "private local zip", args: []string{"-config", cfg, "-zip", w.Module(testworld.PrivatePath, testworld.Version).WriteZip(t), testworld.PrivatePath + "@v1.0.0"}, wantStatus: 0,
			wantOut: []string{"(zip): private module"}},
		{name: "upper-case path", args: []string{"-config", cfg, testworld.UpperPath + "@v1.0.0"}, wantStatus: 0,
			wantOut: []string{testworld.UpperPath + "@v1.0.0 (zip): verified"}},
		{name: "case-encoded path", args: []string{"-config", cfg, "github.com/!upper/!case@v1.0.0"}, wantStatus: 0,
			wantOut: []string{testworld.UpperPath + "@v1.0.0 (zip): verified"}},
		{name: "local genuine zip only", args: []string{"-config", cfg, "-zip", good.WriteZip(t), "example.com/good@v1.0.0"}, wantStatus: 0,
			wantOut: []string{"(zip): verified"}},
		{name: "local tampered go.mod", args: []string{"-config", cfg, "-mod", tampered.WriteMod(t), testworld.TamperedModPath + "@v1.0.0"}, wantStatus: 1,
			wantOut: []string{"(go.mod): checksum mismatch"}},
		{name: "database down", args: []string{"-config", fresh, "example.com/good@v1.0.0"}, mode: testworld.SumDBDown, wantStatus: 2,
			wantOut: []string{"checksum database unavailable"}},
		{name: "database forked", before: []string{"-config", forked, "example.com/good@v1.0.0"},
			args: []string{"-config", forked, testworld.UpperPath + "@v1.0.0"}, mode: testworld.SumDBForked, wantStatus: 1,
			wantOut: []string{"checksum database security error"}, wantErr: "All downloads are blocked"},
		{name: "not on any proxy", args: []string{"-config", cfg, "example.com/nowhere@v1.0.0"}, wantStatus: 2,
			wantErr: "downloading example.com/nowhere@v1.0.0"},
		{name: "no argument", args: []string{"-config", cfg}, wantStatus: 2, wantErr: "usage: sumgate verify"},
		{name: "no version", args: []string{"example.com/good"}, wantStatus: 2, wantErr: "want MODULE@VERSION"},
		{name: "non-canonical version", args: []string{"example.com/good@v1.0"}, wantStatus: 2, wantErr: "not canonical"},
		{name: "bad escape", args: []string{"github.com/!!x/y@v1.0.0"}, wantStatus: 2, wantErr: "invalid module path"},
		{name: "unknown config key", args: []string{"-config", badKey, "example.com/good@v1.0.0"}, wantStatus: 2, wantErr: `bad.yaml:3: unknown key "sumdb.kee"`},
		{name: "missing local file", args: []string{"-config", cfg, "-zip", "/nonexistent.zip", "example.com/good@v1.0.0"}, wantStatus: 2, wantErr: "nonexistent.zip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if tt.before != nil {
				if status := run(append([]string{"verify"}, tt.before...), &stdout, &stderr); status != 0 {
					t.Fatalf("before: exit status %d\n%s%s", status, &stdout, &stderr)
				}
				stdout.Reset()
				stderr.Reset()
			}
			w.SetSumDB(tt.mode)
			defer w.SetSumDB(testworld.SumDBHonest)
			status := run(append([]string{"verify"}, tt.args...), &stdout, &stderr)
			if status != tt.wantStatus {
				t.Errorf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", status, tt.wantStatus, &stdout, &stderr)
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, &stdout)
				}
			}
			if !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, &stderr)
			}
		})
	}
}

// TestVerifyJSONPrintsEveryOutcome: with -json, every outcome, errors
// included, is one JSON object per line on standard output, per file or
// per error, and a file that did not pass says why.
func TestVerifyJSONPrintsEveryOutcome(t *testing.T) {
	w := testworld.New(t)
	cfg := func() string { return writeConfig(t, w, []string{w.ProxyURL}, "") } // a fresh data directory
	good := w.Module(testworld.GoodPath, testworld.Version)
	tampered := w.Module(testworld.TamperedZipPath, testworld.Version)
	badKey := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(badKey, []byte("data_dir: x\nsumdb:\n  kee: y\n"), 0o600)

	type object struct{ kind, outcome, text string } // text: in reason, or in error
	tests := []struct {
		name       string
		args       []string
		mode       testworld.SumDBMode
		wantStatus int
		module     string // every object's module@version; "@" when unknown
		want       []object
	}{
		{name: "verified", args: []string{"-config", cfg(), testworld.GoodPath + "@v1.0.0"}, wantStatus: 0, module: testworld.GoodPath + "@v1.0.0",
			want: []object{{"zip", "verified", ""}, {"go.mod", "verified", ""}}},
		{name: "checksum mismatch", args: []string{"-config", cfg(), testworld.TamperedZipPath + "@v1.0.0"}, wantStatus: 1, module: testworld.TamperedZipPath + "@v1.0.0",
			want: []object{{"zip", "mismatch", "checksum mismatch: downloaded h1:"}, {"zip", "mismatch", "checksum database has " + tampered.ZipHash}, {"go.mod", "verified", ""}}},
		{name: "malformed zip", args: []string{"-config", cfg(), testworld.HostileSymlinkPath + "@v1.0.0"}, wantStatus: 1, module: testworld.HostileSymlinkPath + "@v1.0.0",
			want: []object{{"zip", "mismatch", "symlink"}, {"go.mod", "verified", ""}}},
		{name: "not found", args: []string{"-config", cfg(), testworld.UnknownPath + "@v1.0.0"}, wantStatus: 1, module: testworld.UnknownPath + "@v1.0.0",
			want: []object{{"zip", "not-found", "has no record of"}, {"go.mod", "not-found", "has no record of"}}},
		{name: "database down", args: []string{"-config", cfg(), testworld.GoodPath + "@v1.0.0"}, mode: testworld.SumDBDown, wantStatus: 2, module: testworld.GoodPath + "@v1.0.0",
			want: []object{{"zip", "unavailable", "503"}, {"go.mod", "unavailable", "503"}}},
		{name: "private", args: []string{"-config", cfg(), testworld.PrivatePath + "@v1.0.0"}, wantStatus: 0, module: testworld.PrivatePath + "@v1.0.0",
			want: []object{{"zip", "private", "not looked up"}, {"go.mod", "private", "not looked up"}}},
		{name: "local genuine zip", args: []string{"-config", cfg(), "-zip", good.WriteZip(t), testworld.GoodPath + "@v1.0.0"}, wantStatus: 0, module: testworld.GoodPath + "@v1.0.0",
			want: []object{{"zip", "verified", ""}}},
		{name: "download failed", args: []string{"-config", cfg(), "example.com/nowhere@v1.0.0"}, wantStatus: 2, module: "example.com/nowhere@v1.0.0",
			want: []object{{"zip", "error", "downloading example.com/nowhere@v1.0.0 (zip): "}}},
		{name: "missing local file", args: []string{"-config", cfg(), "-mod", "/nonexistent.mod", testworld.GoodPath + "@v1.0.0"}, wantStatus: 2, module: testworld.GoodPath + "@v1.0.0",
			want: []object{{"go.mod", "error", "/nonexistent.mod"}}},
		{name: "configuration error", args: []string{"-config", badKey, testworld.GoodPath + "@v1.0.0"}, wantStatus: 2, module: testworld.GoodPath + "@v1.0.0",
			want: []object{{"", "error", `bad.yaml:3: unknown key "sumdb.kee"`}}},
		{name: "bad argument", args: []string{testworld.GoodPath + "@v1.0"}, wantStatus: 2, module: "@",
			want: []object{{"", "error", "not canonical"}}},
		{name: "no argument", args: []string{"-config", cfg()}, wantStatus: 2, module: "@",
			want: []object{{"", "error", "want one MODULE@VERSION argument, got 0"}}},
		{name: "bad flag after -json", args: []string{"-frob", testworld.GoodPath + "@v1.0.0"}, wantStatus: 2, module: "@",
			want: []object{{"", "error", "flag provided but not defined: -frob"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.SetSumDB(tt.mode)
			defer w.SetSumDB(testworld.SumDBHonest)
			var stdout, stderr bytes.Buffer
			status := run(append([]string{"verify", "-json"}, tt.args...), &stdout, &stderr)
			if status != tt.wantStatus {
				t.Errorf("exit status %d, want %d\nstderr:\n%s", status, tt.wantStatus, &stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
			var got []map[string]any
			for _, line := range lines {
				var obj map[string]any
				if err := json.Unmarshal([]byte(line), &obj); err != nil {
					t.Fatalf("stdout line %q is not one JSON object: %v\nstdout:\n%s", line, err, &stdout)
				}
				got = append(got, obj)
			}
			for _, want := range tt.want {
				i := slices.IndexFunc(got, func(obj map[string]any) bool {
					kind, _ := obj["kind"].(string) // absent from an error about no one file
					return kind == want.kind && obj["outcome"] == want.outcome
				})
				if i < 0 {
					t.Errorf("no %s object with outcome %s in:\n%s", want.kind, want.outcome, &stdout)
					continue
				}
				obj := got[i]
				if m := fmt.Sprint(obj["module"], "@", obj["version"]); m != tt.module {
					t.Errorf("%s: module@version %q, want %q", want.kind, m, tt.module)
				}
				field := "reason"
				if want.outcome == "error" {
					field = "error"
				}
				text, _ := obj[field].(string)
				if want.text == "" && text != "" || !strings.Contains(text, want.text) {
					t.Errorf("%s %s: %s %q, want it to contain %q", want.kind, want.outcome, field, text, want.text)
				}
				if want.outcome == "verified" && (obj["got"] != obj["want"] || obj["tree_size"] == nil) {
					t.Errorf("verified %s: %v", want.kind, obj)
				}
			}
			if n := len(slices.CompactFunc(slices.Clone(tt.want), func(a, b object) bool { return a.kind == b.kind })); len(got) != n {
				t.Errorf("%d objects, want %d (one per file or error):\n%s", len(got), n, &stdout)
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if status := run([]string{"frobnicate"}, &stdout, &stderr); status != 2 || !strings.Contains(stderr.String(), "unknown command") {
		t.Fatalf("status %d, stderr %q", status, &stderr)
	}
}

// TestUpstreamClientKnowsTheOperatorOrigins: run and verify build their
// upstream client with the origins of module_proxies and sumdb.urls, so
// that those may be internal proxies. A listed origin at a loopback
// address is still refused (no packet is sent), and the refusal says it
// is refused although listed, which only a client that knows the origins
// can say.
func TestUpstreamClientKnowsTheOperatorOrigins(t *testing.T) {
	clearOTELEnv(t)
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	w := testworld.New(t)
	const refusal = "refusing to dial 127.0.0.1:1: 127.0.0.1 resolves to the internal address 127.0.0.1, which even a module_proxies or sumdb.urls origin may not reach"
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sumgate.yaml")
	os.WriteFile(cfg, fmt.Appendf(nil, "data_dir: %s\nsumdb:\n  key: %s\n  urls: [https://127.0.0.1:1/sumdb/sum.golang.org]\nlisten: 127.0.0.1:0\nadmin_listen: \"off\"\n",
		filepath.Join(dir, "data"), w.SumDBKey), 0o600)
	for _, tt := range []struct {
		name string
		run  func(t *testing.T) string // what the command said
	}{
		{"verify", func(t *testing.T) string {
			var stdout, stderr bytes.Buffer
			mod := w.Module(testworld.GoodPath, testworld.Version).WriteMod(t)
			if status := run([]string{"verify", "-config", cfg, "-mod", mod, testworld.GoodPath + "@" + testworld.Version}, &stdout, &stderr); status != 2 {
				t.Errorf("exit status %d, want 2", status)
			}
			return stdout.String() + stderr.String()
		}},
		{"run", func(t *testing.T) string {
			logs := &testworld.Buffer{}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan int, 1)
			go func() { done <- runCmd(ctx, []string{"-config", cfg}, io.Discard, logs) }()
			for deadline := time.Now().Add(15 * time.Second); !strings.Contains(logs.String(), "not reachable yet") && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
			}
			cancel()
			<-done
			return logs.String()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if out := tt.run(t); !strings.Contains(out, refusal) {
				t.Errorf("output lacks %q:\n%s", refusal, out)
			}
		})
	}
}

// TestVerifyOfAChangingFileVouchesForNoOtherBytes: `sumgate verify -zip`
// checks a file it does not own, which may change while it is read (a
// shared folder, a file swapped by rename). The SHA-256 of a verified zip
// is remembered in the data directory the gateway shares, and bytes with
// that digest pass later without being inflated; so the bytes whose
// digest is remembered must be the very bytes that hashed to the logged
// hash. Here the path flips between the genuine zip and a tampered one
// while verify runs; afterwards the tampered bytes must still be a
// mismatch.
func TestVerifyOfAChangingFileVouchesForNoOtherBytes(t *testing.T) {
	w := testworld.New(t)
	cfg := writeConfig(t, w, []string{w.ProxyURL}, "")
	m := w.Module(testworld.GoodPath, testworld.Version)
	prefix := testworld.GoodPath + "@" + testworld.Version + "/"
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range map[string]string{"go.mod": string(m.Mod), "evil.go": "package good\n\nfunc init() { println(\"pwned\") }\n"} {
		f, err := zw.Create(prefix + name)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte(content))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	evil := buf.Bytes()
	dir := t.TempDir()
	stable := filepath.Join(dir, "evil.zip")
	if err := os.WriteFile(stable, evil, 0o600); err != nil {
		t.Fatal(err)
	}
	verify := func(file string) (int, string) {
		var stdout, stderr bytes.Buffer
		status := run([]string{"verify", "-config", cfg, "-zip", file, m.Version.String()}, &stdout, &stderr)
		return status, stdout.String() + stderr.String()
	}
	if status, out := verify(stable); status != 1 {
		t.Fatalf("the tampered zip: exit status %d, want 1\n%s", status, out)
	}

	flipping := filepath.Join(dir, "flipping.zip")
	ctx, stop := context.WithCancel(context.Background())
	flipped := make(chan struct{})
	go func() {
		defer close(flipped)
		tmp := filepath.Join(dir, "next.zip")
		for i := 0; ctx.Err() == nil; i++ {
			data := evil
			if i%2 == 1 {
				data = m.Zip
			}
			os.WriteFile(tmp, data, 0o600)
			os.Rename(tmp, flipping)
		}
	}()
	defer func() { stop(); <-flipped }()
	for deadline, i := time.Now().Add(20*time.Second), 0; time.Now().Before(deadline) && i < 400; i++ {
		verify(flipping) // either verdict is right for what it read
		if i%10 == 9 {
			if status, out := verify(stable); status != 1 {
				t.Fatalf("after %d checks of a file that changed, the tampered zip: exit status %d, want 1\n%s", i+1, status, out)
			}
		}
	}
}
