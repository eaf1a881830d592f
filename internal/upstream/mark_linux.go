package upstream

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// MarkControl returns a net.Dialer Control function that sets SO_MARK to
// mark on each socket before it connects (which needs CAP_NET_ADMIN), or
// nil when mark is zero.
func MarkControl(mark int) func(network, address string, c syscall.RawConn) error {
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
