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

// tproxyControl sets IP_TRANSPARENT (and IPV6_TRANSPARENT) on a
// listening socket, so that it accepts connections TPROXY steers to it
// for addresses that are not its own.
func tproxyControl(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		if err := unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1); err == nil {
			serr = nil // an IPv6 socket
		}
	}); err != nil {
		return err
	}
	return serr
}
