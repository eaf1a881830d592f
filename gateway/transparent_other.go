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

func tproxyControl(string, string, syscall.RawConn) error {
	return errors.New("TPROXY needs Linux")
}
