package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/user"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/sumdb"
)

const alertUsage = `usage: sumgate alert show|clear [-config FILE] [-data-dir DIR] [-by NAME]

Shows or clears the checksum database's security alert: the evidence of
a fork, which blocks every download until an operator has investigated.

With state.backend etcd the alert is shared: clear removes it for every
replica, which serve again within seconds; an alert a replica could not
record in etcd yet stays in its data directory (run clear there too).
clear records who cleared it (-by, the operating-system user by
default), when, on which host and what: next to the alert file, or in
etcd under alert-cleared/; every replica logs it.

Exit status: show: 0 no alert, 1 an alert is on record; clear: 0 cleared
or none; 2 usage or configuration error, or the state cannot be reached.

Flags:
`

// alertCmd implements "sumgate alert".
func alertCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "show" && args[0] != "clear") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fmt.Fprint(stdout, alertUsage)
			return exitOK
		}
		fmt.Fprint(stderr, alertUsage)
		return exitError
	}
	action := args[0]
	fs := flag.NewFlagSet("alert "+action, flag.ContinueOnError)
	configFile := fs.String("config", "", "configuration `file` (default: built-in defaults)")
	dataDir := fs.String("data-dir", "", "data `directory` (overrides the file's data_dir)")
	by := fs.String("by", "", "who clears the alert (default: the operating-system user)")
	if err := parseFlags(fs, alertUsage, args[1:], stdout, stderr); err != nil {
		return flagStatus(err)
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "sumgate alert %s: %v\n", action, err)
		return exitError
	}
	if fs.NArg() > 0 {
		return fail(fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	cfg, err := config.Load(*configFile)
	if err != nil {
		return fail(err)
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	etcd, err := dialState(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	defer closeState(etcd)
	scfg := sumdb.Config{Key: cfg.SumDB.Key, DataDir: cfg.DataDir, Etcd: etcd, EtcdPrefix: cfg.State.Etcd.Prefix, EtcdTimeout: cfg.State.Etcd.DialTimeout}
	if action == "show" {
		a, ok, err := sumdb.ReadAlert(ctx, scfg)
		if err != nil {
			return fail(err)
		}
		if !ok {
			fmt.Fprintln(stdout, "no security alert on record")
			return exitOK
		}
		fmt.Fprintf(stdout, "security alert since %s (%s):\n%s\n", a.Since.UTC().Format("2006-01-02T15:04:05Z"), a.Where, a.Evidence)
		return exitBlocked
	}
	who := *by
	if who == "" {
		if u, err := user.Current(); err == nil {
			who = u.Username
		}
	}
	cl, ok, err := sumdb.ClearAlert(ctx, scfg, who)
	if err != nil {
		return fail(err)
	}
	if !ok {
		fmt.Fprintln(stdout, "no security alert on record")
		return exitOK
	}
	fmt.Fprintf(stdout, "cleared the security alert, by %s on %s at %s; recorded in %s\n", cl.By, cl.Host, cl.At.Format("2006-01-02T15:04:05Z"), cl.Where)
	return exitOK
}
