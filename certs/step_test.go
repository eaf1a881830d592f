//go:build step

package certs

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sumgate/sumgate/internal/stepcatest"
	"github.com/sumgate/sumgate/internal/testworld"
)

// stepConfig returns a Config for the step backend against s with the
// provisioner named by kind: "jwk", "jwk-fetched" (key fetched from the
// CA) or "x5c".
func stepConfig(s *stepcatest.CA, kind string) Config {
	cfg := Config{Backend: BackendStep, LeafLifetime: time.Hour, Intercept: testHosts}
	st := StepConfig{URL: s.URL, Root: s.RootFile}
	switch kind {
	case "jwk":
		st.Type, st.Provisioner, st.Key, st.Password = "jwk", s.JWK.Name, s.JWK.KeyFile, []byte(s.JWK.Password)
	case "jwk-fetched":
		st.Type, st.Provisioner, st.Password = "jwk", s.JWK.Name, []byte(s.JWK.Password)
		st.Root, st.Fingerprint = "", s.Fingerprint
	case "x5c":
		st.Type, st.Provisioner, st.Key, st.Cert, st.Password = "x5c", s.X5C.Name, s.X5C.KeyFile, s.X5C.CertFile, []byte(s.X5C.Password)
	}
	cfg.Step = st
	return cfg
}

// TestStepBackend runs the step backend against smallstep's own step-ca
// code, with each kind of provisioner.
func TestStepBackend(t *testing.T) {
	for _, kind := range []string{"jwk", "jwk-fetched", "x5c"} {
		t.Run(kind, func(t *testing.T) {
			s := stepcatest.Start(t)
			c := newCA(t, stepConfig(s, kind))
			if Fingerprint(c.Root()) != s.Fingerprint {
				t.Fatalf("root %s, want the step-ca's %s", Fingerprint(c.Root()), s.Fingerprint)
			}
			addr := serve(t, c)
			for _, host := range testHosts {
				chain, err := handshake(addr, host, pool(s.Root))
				if err != nil {
					t.Fatalf("%s: %v", host, err)
				}
				checkLeaf(t, chain, host, s.Root, time.Hour)
			}
		})
	}
}

func TestStepConfigErrors(t *testing.T) {
	s := stepcatest.Start(t)
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no password", func(c *Config) { c.Step.Password = nil }, "password is missing"},
		{"wrong password", func(c *Config) { c.Step.Password = []byte("wrong") }, "connecting to step-ca"},
		{"wrong fingerprint", func(c *Config) { c.Step.Root, c.Step.Fingerprint = "", strings.Repeat("ab", 32) }, s.URL},
		{"no provisioner", func(c *Config) { c.Step.Provisioner = "" }, "ca.step.provisioner is required"},
		{"unreachable", func(c *Config) { c.Step.URL = "https://127.0.0.1:1" }, "https://127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := stepConfig(s, "jwk")
			cfg.DataDir = t.TempDir()
			cfg.Logger = slog.New(slog.DiscardHandler)
			tt.edit(&cfg)
			_, err := New(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestStepOutage: when the step-ca goes away, leaves already minted keep
// working, a new host fails its handshake with a logged reason, and a
// restart is possible while the held leaves are valid.
func TestStepOutage(t *testing.T) {
	s := stepcatest.Start(t)
	cfg := stepConfig(s, "jwk")
	cfg.DataDir = t.TempDir()
	cfg.Intercept = []string{"held.example", "new.example"}
	var logs testworld.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	c, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	addr := serve(t, c)
	if _, err := handshake(addr, "held.example", pool(s.Root)); err != nil {
		t.Fatal(err)
	}

	s.Stop()
	if _, err := handshake(addr, "held.example", pool(s.Root)); err != nil {
		t.Errorf("a leaf minted before the outage stopped working: %v", err)
	}
	if _, err := handshake(addr, "new.example", pool(s.Root)); err == nil {
		t.Error("a new host got a leaf while the CA is down")
	}
	if !strings.Contains(logs.String(), "minting a leaf failed") || !strings.Contains(logs.String(), "new.example") {
		t.Errorf("no logged reason for the failed handshake:\n%s", logs.String())
	}
	c.Stop()

	// Restarting with the CA down fails unless every intercepted name has
	// a valid leaf in storage.
	if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), s.URL) {
		t.Fatalf("restart with the CA down and a leaf missing: err = %v, want one naming %s", err, s.URL)
	}
	cfg.Intercept = []string{"held.example"}
	restarted, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("restart with the CA down but valid leaves held: %v", err)
	}
	defer restarted.Stop()
	if _, err := handshake(serve(t, restarted), "held.example", pool(s.Root)); err != nil {
		t.Errorf("held leaf after restart: %v", err)
	}
}

// TestStepPremint: pre-minting asks the step-ca for each listed name;
// after a restart with the CA down it loads the leaves held, asks for
// nothing and logs no failure.
func TestStepPremint(t *testing.T) {
	s := stepcatest.Start(t)
	cfg := stepConfig(s, "jwk")
	cfg.DataDir = t.TempDir()
	cfg.Intercept = []string{"premint-a.step.example", "premint-b.step.example"}
	cfg.Premint = true
	var logs testworld.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	c, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	premintDone(t, c)
	c.Stop()
	if c.Issued() != 2 {
		t.Fatalf("pre-minted %d leaves through the step-ca, want 2", c.Issued())
	}

	s.Stop()
	restarted, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("restart with the CA down but valid leaves held: %v", err)
	}
	defer restarted.Stop()
	premintDone(t, restarted)
	if restarted.Issued() != 0 || strings.Contains(logs.String(), "pre-minting a leaf failed") {
		t.Errorf("pre-minting with the CA down and the leaves held: %d minted; logs:\n%s", restarted.Issued(), logs.String())
	}
	for _, name := range cfg.Intercept {
		if _, err := handshake(serve(t, restarted), name, pool(s.Root)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
