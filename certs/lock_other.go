//go:build !linux

package certs

import "context"

// fileLocks takes no lock where open file description locks do not
// exist: leafStore's in-process lock still serialises issuance, but
// processes must not share a data directory.
type fileLocks struct{}

func openFileLocks(string) (*fileLocks, error)        { return &fileLocks{}, nil }
func (*fileLocks) lock(context.Context, string) error { return nil }
func (*fileLocks) unlock(string) error                { return nil }
func (*fileLocks) close() error                       { return nil }
