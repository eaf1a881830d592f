//go:build !linux

package gateway

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

func soOriginalDst(net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("SO_ORIGINAL_DST needs Linux")
}

func markControl(mark int) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(string, string, syscall.RawConn) error { return errors.New("SO_MARK needs Linux") }
}
