package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"go.opentelemetry.io/otel/metric"

	"github.com/sumgate/sumgate/internal/config"
	"github.com/sumgate/sumgate/policy"
	"github.com/sumgate/sumgate/policy/advisory"
)

// newPolicy builds the policy engine the file describes (policy:), with
// its advisory databases loaded (every source must load once, or sumgate
// does not start: a block list over a database that never loaded would
// block nothing) and refreshed in the background through client, the
// verified upstream. It returns nil when the file sets no policy, and a
// function that stops the refreshes. It logs the configuration's
// warnings (an expired waiver).
func newPolicy(ctx context.Context, cfg *config.Config, client *http.Client, log *slog.Logger, mp metric.MeterProvider) (*policy.Engine, func(), error) {
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	p := cfg.Policy
	if len(p.Rules) == 0 && len(p.Waivers) == 0 && len(p.Advisories.Sources) == 0 && p.Cooldown == 0 {
		return nil, func() {}, nil
	}
	stop := func() {}
	var opts policy.Options
	if len(p.Advisories.Sources) > 0 {
		block, err := advisory.ParseSelectors(p.Advisories.Block)
		if err != nil {
			return nil, nil, fmt.Errorf("policy.advisories.block: %w", err)
		}
		w, err := advisory.NewWatcher(ctx, advisory.WatcherConfig{
			Sources:       p.Advisories.Sources,
			Refresh:       p.Advisories.Refresh,
			Client:        client,
			MeterProvider: mp,
			OnRefresh: func(source string, err error) {
				if err != nil {
					log.Warn("advisory database not refreshed: keeping the last good copy", "source", source, "err", err)
				}
			},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("policy.advisories.sources: loading: %w", err)
		}
		stop = func() { w.Close() }
		opts.Advisories = policy.Advisories(w.Current, block)
		for _, st := range w.Status() {
			log.Info("advisory database loaded", "source", st.Source, "entries", st.Entries)
		}
	}
	e, err := policy.New(p, opts)
	if err != nil {
		stop()
		return nil, nil, err
	}
	log.Info("policy", "mode", string(p.Mode), "rules", len(p.Rules), "waivers", len(p.Waivers), "cooldown", p.Cooldown.String())
	return e, stop, nil
}
