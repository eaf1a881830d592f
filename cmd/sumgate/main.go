// Command sumgate is a corporate egress gateway for Go modules: it
// intercepts TLS to the module proxies and code hosts, verifies every
// module download against the Go checksum database before passing it on,
// and records every request for audit.
//
// Usage:
//
//	sumgate run [-config FILE] [-listen ADDR] [-transparent-listen ADDR] [-admin-listen ADDR|off] [-data-dir DIR]
//	sumgate verify [-config FILE] [-zip FILE] [-mod FILE] [-json] MODULE@VERSION
//	sumgate ca init|export|bundle [-config FILE] [-data-dir DIR] [-system-roots FILE]
//	sumgate healthcheck [-config FILE] [-admin ADDR] [-timeout D]
//	sumgate alert show|clear [-config FILE] [-data-dir DIR] [-by NAME]
//	sumgate version
//
// See the README for the configuration file and the gateway.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// Exit statuses shared by the subcommands.
const (
	exitOK      = 0 // verified (or private)
	exitBlocked = 1 // blocked: mismatch, unknown, security error
	exitError   = 2 // usage error, or something could not be reached
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: sumgate <command> [arguments]

commands:
  run       start the gateway
  verify    check a module version against the Go checksum database
  ca        create, export and bundle the enterprise CA's root
  healthcheck  exit 0 if the gateway's /readyz answers 200 (for containers)
  alert     show or clear the checksum database's security alert
  version   print the version, VCS revision and Go version

Run 'sumgate <command> -h' for a command's flags.
`

// run dispatches to a subcommand and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "run":
		return runCmd(ctx, args[1:], stdout, stderr)
	case "verify":
		return verifyCmd(ctx, args[1:], stdout, stderr)
	case "ca":
		return caCmd(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		return healthcheckCmd(ctx, args[1:], stdout, stderr)
	case "alert":
		return alertCmd(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		return versionCmd(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "sumgate: unknown command %q\n%s", args[0], usage)
	return exitError
}

// version is the module version sumgate was built from, or "devel".
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	if linkedVersion != "" {
		return linkedVersion
	}
	return "devel"
}

// parseFlags parses args into fs, whose usage is usage followed by the
// flags. It returns nil to go on. Asked for help (-h, -help), it prints
// that on stdout and returns flag.ErrHelp; on a bad flag, flag's message
// and the usage go to stderr and it returns the error. [flagStatus] is
// the exit status for the error.
func parseFlags(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer) error {
	fs.SetOutput(stderr)
	printUsage := func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	fs.Usage = func() {} // flag calls it on help and on errors alike; printed below
	err := fs.Parse(args)
	fs.Usage = printUsage
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(stderr)
	case err != nil:
		fs.Usage()
	}
	return err
}

// flagStatus is the exit status for an error from [parseFlags]: asking
// for help is not a failure.
func flagStatus(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitError
}
