package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sumgate/sumgate/certs"
	"github.com/sumgate/sumgate/internal/config"
)

const caUsage = `usage: sumgate ca <init|export|bundle> [-config FILE] [-data-dir DIR] [-system-roots FILE]

  init     create the embedded CA (or check the imported one, or the step-ca)
           and print the root's SHA-256 fingerprint
  export   print the root certificate, PEM
  bundle   print the system roots followed by the root, PEM: a file clients
           can use as SSL_CERT_FILE (and git as GIT_SSL_CAINFO) and still
           reach hosts sumgate does not intercept

Give the same -config and -data-dir as 'sumgate run' to reach its CA.

Flags:
`

// caCmd implements 'sumgate ca'.
func caCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, caUsage)
		return exitError
	}
	sub := args[0]
	fs := flag.NewFlagSet("ca "+sub, flag.ContinueOnError)
	configFile := fs.String("config", "", "configuration `file` (default: built-in defaults)")
	dataDir := fs.String("data-dir", "", "data `directory`, overriding the file's data_dir")
	systemRoots := fs.String("system-roots", "", "bundle: read the system roots from this PEM `file`")
	switch sub {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, caUsage)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return exitOK
	}
	if err := parseFlags(fs, caUsage, args[1:], stdout, stderr); err != nil {
		return flagStatus(err)
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "sumgate ca %s: %v\n", sub, err)
		return exitError
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return exitError
	}
	cfg, err := config.Load(*configFile)
	if err != nil {
		return fail(err)
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	ccfg, err := caConfig(cfg)
	if err != nil {
		return fail(err)
	}
	switch sub {
	case "init":
		root, err := certs.Init(ctx, ccfg)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "CA ready (%s backend): %s\nroot SHA-256 fingerprint: %s\n", cfg.CA.Backend, root.Subject, certs.Fingerprint(root))
		return exitOK
	case "export", "bundle":
		root, err := certs.LoadRoot(ctx, ccfg)
		if err != nil {
			return fail(err)
		}
		out := certs.PEM(root)
		if sub == "bundle" {
			if out, err = certs.Bundle(root, *systemRoots); err != nil {
				return fail(err)
			}
		}
		stdout.Write(out)
		return exitOK
	}
	fmt.Fprintf(stderr, "sumgate ca: unknown command %q\n%s", sub, caUsage)
	return exitError
}

// caConfig turns the file's ca section into certs.Config, reading the
// passwords from their files or the environment.
func caConfig(cfg *config.Config) (certs.Config, error) {
	caPass, err := readPassword(cfg.CA.PasswordFile, "SUMGATE_CA_PASSWORD")
	if err != nil {
		return certs.Config{}, err
	}
	stepPass, err := readPassword(cfg.CA.Step.PasswordFile, "SUMGATE_STEP_PASSWORD")
	if err != nil {
		return certs.Config{}, err
	}
	st := cfg.CA.Step
	return certs.Config{
		Backend:      cfg.CA.Backend,
		DataDir:      cfg.DataDir,
		Intercept:    cfg.Intercept,
		Splice:       cfg.Splice,
		Cert:         cfg.CA.Cert,
		Key:          cfg.CA.Key,
		Password:     caPass,
		LeafLifetime: cfg.CA.LeafLifetime,
		Step: certs.StepConfig{URL: st.URL, Root: st.Root, Fingerprint: st.Fingerprint, Provisioner: st.Provisioner,
			Type: st.Type, Key: st.Key, Cert: st.Cert, Password: stepPass},
	}, nil
}

// readPassword reads a password from file (which group and others must
// not be able to read), or else from the environment variable env. A
// trailing newline is not part of the password.
func readPassword(file, env string) ([]byte, error) {
	if file == "" {
		return []byte(os.Getenv(env)), nil
	}
	info, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("reading password: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("password file %s has mode %v: refusing a file that group or others can access (chmod 600 %s)",
			file, info.Mode().Perm(), filepath.Base(file))
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading password: %w", err)
	}
	pw := strings.TrimRight(string(data), "\r\n")
	if pw == "" {
		return nil, errors.New("password file " + file + " is empty")
	}
	return []byte(pw), nil
}
