package certs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// lockPoll is how often a lock another process holds is tried again.
const lockPoll = 5 * time.Millisecond

// fileLocks are named locks shared with other processes: each name is a
// one-byte open file description lock (fcntl F_OFD_SETLK) on one file, at
// an offset hashed from the name. Taking one changes nothing on disk, so
// it never waits for the file system's journal, as creating a lock file
// per name does; the kernel releases it if the process dies. Two names
// may hash alike and then wait for each other, which is only slower.
// Locks taken through different fileLocks exclude each other, in one
// process as across processes.
type fileLocks struct {
	f *os.File // the lock file, open while the locks are used
}

// openFileLocks opens (creating it) the lock file name.
func openFileLocks(name string) (*fileLocks, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the lock file: %w", err)
	}
	return &fileLocks{f: f}, nil
}

// byteOf returns the offset of name's lock.
func byteOf(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return int64(h.Sum64() >> 2) // non-negative, below the largest offset
}

func (l *fileLocks) fcntl(name string, typ int16) error {
	return unix.FcntlFlock(l.f.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: typ, Whence: 0, Start: byteOf(name), Len: 1})
}

// lock takes name's lock, waiting for another holder while ctx lasts.
func (l *fileLocks) lock(ctx context.Context, name string) error {
	for {
		err := l.fcntl(name, unix.F_WRLCK)
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			return err
		}
		select {
		case <-time.After(lockPoll):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// unlock releases name's lock.
func (l *fileLocks) unlock(name string) error { return l.fcntl(name, unix.F_UNLCK) }

// close releases every lock and closes the file.
func (l *fileLocks) close() error { return l.f.Close() }
