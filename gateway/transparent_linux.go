package gateway

import (
	"errors"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// soOriginalDst is the destination a REDIRECT rule rewrote, from
// SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for IPv6, which has the same
// number).
func soOriginalDst(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, errors.New("not a TCP connection")
	}
	local, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.AddrPort{}, err
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	const soOriginalDst = 80 // linux/netfilter_ipv4.h, linux/netfilter_ipv6/ip6_tables.h
	var dst netip.AddrPort
	var serr error
	cerr := raw.Control(func(fd uintptr) {
		if local.Addr().Unmap().Is4() {
			// sockaddr_in read through a struct of at least its size.
			m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, soOriginalDst)
			if err != nil {
				serr = err
				return
			}
			b := m.Multiaddr
			port := uint16(b[2])<<8 | uint16(b[3])
			dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]}), port)
			return
		}
		// sockaddr_in6, read through IPv6MTUInfo, which begins with one.
		info, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.IPPROTO_IPV6, soOriginalDst)
		if err != nil {
			serr = err
			return
		}
		p := info.Addr.Port // network byte order
		port := p>>8 | p<<8
		dst = netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), port)
	})
	if cerr != nil {
		return netip.AddrPort{}, cerr
	}
	return dst, serr
}

// markControl sets SO_MARK on a socket before it connects, when mark is
// not zero.
func markControl(mark int) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
		}); err != nil {
			return err
		}
		return serr
	}
}
