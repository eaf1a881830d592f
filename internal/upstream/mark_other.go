//go:build !linux

package upstream

import (
	"errors"
	"syscall"
)

// MarkControl returns nil when mark is zero; elsewhere than Linux a mark
// cannot be set, and dialling fails.
func MarkControl(mark int) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(string, string, syscall.RawConn) error { return errors.New("SO_MARK needs Linux") }
}
