package main

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
)

// somaxconnFile is where Linux keeps net.core.somaxconn, the cap on every
// listener's accept queue in the network namespace; Go asks for exactly
// that much when it listens.
const somaxconnFile = "/proc/sys/net/core/somaxconn"

// minBacklog is the accept queue below which `sumgate run` warns. Under
// BenchmarkLoad (gateway), 500 clients arriving at once on a busy 2-core
// machine left up to about 120 connections waiting for sumgate to accept
// them; the kernel drops the SYN of a connection that finds the queue
// full, and its client sends it again only 1 s later (then 3 s, 7 s…).
const minBacklog = 1024

// smallBacklog reads net.core.somaxconn from file and reports whether
// it is below minBacklog; it reports false when file cannot be read (not
// Linux).
func smallBacklog(file string) (somaxconn int, small bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, false
	}
	return n, n < minBacklog
}

// warnSmallBacklog logs a warning when the accept queue of the
// listeners (net.core.somaxconn, read from file) is below minBacklog.
func warnSmallBacklog(log *slog.Logger, file string) {
	if n, small := smallBacklog(file); small {
		log.Warn("the listen backlog is small: when more clients connect at once than it holds, the kernel drops their SYNs and each waits 1 s or more",
			"somaxconn", n, "want_at_least", minBacklog,
			"fix", "sysctl -w net.core.somaxconn=4096 (the default since Linux 5.4) in the network namespace sumgate runs in, then restart sumgate")
	}
}
