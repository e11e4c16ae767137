//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package filelock

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/haita/haita/lock"
)

var _ lock.HolderReader = (*backend)(nil)

// Holder reads who holds key now, in this process or another; see
// [lock.Locker.Holder]. Another process is detected with a shared,
// non-blocking flock probe on a descriptor of its own, dropped at once (a
// TryAcquire in another process at that very instant may find the key
// held); its holder and token come from the lock file, which a new holder
// writes right after its flock, so for that short moment the previous
// holder's record is reported.
func (l *Locker) Holder(ctx context.Context, key string) (lock.HolderInfo, error) {
	return l.core.Holder(ctx, key)
}

// ReadHolder implements lock.HolderReader. A key held in this process is
// read from its lock file under the flock. For another process it probes
// with a shared, non-blocking flock on a descriptor of its own: when that
// succeeds nobody holds the key (the probe is dropped at once; a
// TryAcquire in another process at that instant may find the key held, and
// a waiter tries again); when it fails, the holder and token are read from
// the lock file, which the holder writes right after its flock: in that
// short window the previous holder's record is what there is to read.
func (b *backend) ReadHolder(_ context.Context, key string) (lock.HolderInfo, error) {
	name, err := FileName(key)
	if err != nil {
		return lock.HolderInfo{}, err
	}
	b.mu.Lock()
	if e, ok := b.keys[key]; ok && e.held {
		info, err := b.readRecord(key, e.fd)
		b.mu.Unlock()
		return info, err
	}
	b.mu.Unlock()

	b.dirMu.RLock()
	if b.closed {
		b.dirMu.RUnlock()
		return lock.HolderInfo{}, lock.ErrClosed
	}
	fd, err := unix.Openat(b.dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	for err == unix.EINTR {
		fd, err = unix.Openat(b.dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	}
	b.dirMu.RUnlock()
	if errors.Is(err, unix.ENOENT) {
		return lock.HolderInfo{}, lock.ErrNoHolder
	}
	if err != nil {
		return lock.HolderInfo{}, fmt.Errorf("filelock: open %q: %w", key, err)
	}
	defer unix.Close(fd)
	switch err := flock(fd, unix.LOCK_SH|unix.LOCK_NB); {
	case err == nil:
		_ = flock(fd, unix.LOCK_UN)
		return lock.HolderInfo{}, lock.ErrNoHolder
	case !errors.Is(err, unix.EWOULDBLOCK):
		return lock.HolderInfo{}, fmt.Errorf("filelock: flock %q: %w", key, err)
	}
	return b.readRecord(key, fd)
}

// readRecord reads the holder's record from the lock file fd.
func (b *backend) readRecord(key string, fd int) (lock.HolderInfo, error) {
	buf := make([]byte, maxRecord)
	n, err := preadFull(fd, buf)
	if err != nil {
		return lock.HolderInfo{}, fmt.Errorf("filelock: read %q: %w", key, err)
	}
	r, err := parseRecord(buf[:n])
	if err != nil {
		return lock.HolderInfo{}, fmt.Errorf("filelock: lock file of %q: %w", key, err)
	}
	return lock.HolderInfo{Key: key, Holder: r.holder, Token: lock.Token(r.token)}, nil
}

// WatchHolder returns an error matching lock.ErrUnsupported: flock(2) has
// no notification; poll Holder.
func (l *Locker) WatchHolder(ctx context.Context, key string) (lock.Subscription, error) {
	return l.core.WatchHolder(ctx, key)
}
