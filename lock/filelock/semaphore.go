package filelock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haita/haita/lock"
)

// NewSemaphore returns a [lock.Semaphore] with limit permits per key, on
// lock files in dir shared by every process of the machine: permit i of a
// key is an exclusive flock(2) on the key's slot file i, so the permits of
// a process that dies come back when the kernel closes its descriptors.
// Leases have no TTL (opts.TTL must be zero). The key's limit is kept in a
// limit file, read and written under its own flock, so that a client with
// another limit gets a *lock.LimitError while any slot is held. Tokens come
// from a filelock mutex on a fence key of the same directory (see
// [Locker]'s fencing), drawn after the slot is taken, so a permit granted
// after another one's token was drawn has a greater token. Waiters poll
// (opts.PollInterval, default [DefaultPollInterval]); there is no queue, so
// the order is not FIFO. It returns an error matching
// lock.ErrInvalidOptions as [New] does, or for a bad limit.
func NewSemaphore(dir string, opts lock.Options, limit int) (*lock.Semaphore, error) {
	b, err := newSemBackend(dir, opts)
	if err != nil {
		return nil, err
	}
	s, err := lock.NewSemaphore(b, b.opts, limit)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	return s, nil
}

// NewRWLocker returns a [lock.RWLocker] on lock files in dir: a reader
// holds a shared flock(2) on the key's file, a writer an exclusive one. A
// writer that waits holds an exclusive flock on the key's turnstile file,
// which every reader must pass (a shared flock taken and dropped) before it
// reads, so readers that come after a waiting writer wait behind it and a
// stream of readers cannot starve it. Otherwise it is like
// [NewSemaphore]: no TTL, leases of a dead process freed by the kernel,
// polling waiters.
func NewRWLocker(dir string, opts lock.Options) (*lock.RWLocker, error) {
	b, err := newSemBackend(dir, opts)
	if err != nil {
		return nil, err
	}
	l, err := lock.NewRWLocker(b, b.opts)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	return l, nil
}

func newSemBackend(dir string, opts lock.Options) (*semBackend, error) {
	fence, err := New(dir, lock.Options{})
	if err != nil {
		return nil, err
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = DefaultPollInterval
	}
	b := &semBackend{dir: fence.b.dir, fence: fence, opts: opts,
		held: make(map[lock.Owner]int), turnstiles: make(map[lock.Owner]int)}
	return b, nil
}

// semBackend implements lock.Backend and lock.Notifier on lock files.
type semBackend struct {
	dir   string
	fence *Locker // draws the tokens
	opts  lock.Options

	mu         sync.Mutex
	held       map[lock.Owner]int // the descriptor of each permit held
	turnstiles map[lock.Owner]int // the turnstile descriptor of each waiting writer
	closed     bool
}

var (
	_ lock.Backend  = (*semBackend)(nil)
	_ lock.Notifier = (*semBackend)(nil)
)

func (b *semBackend) Capabilities() lock.Capabilities {
	return lock.Capabilities{Name: "file", Fencing: true, CrossProcess: true, Semaphore: true, RWLock: true}
}

func (b *semBackend) DefaultTTL() time.Duration { return 0 }

func (b *semBackend) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return b.fence.Close()
}

// name returns the file name of one of key's files: kind "limit", "rw",
// "turnstile" or a slot number. Keys are hashed: a key of any length makes
// a name of fixed length, and distinct keys do not share files.
func name(key, kind string) string {
	h := sha256.Sum256([]byte(key))
	return "s-" + hex.EncodeToString(h[:16]) + "." + kind
}

func (b *semBackend) open(key, kind string) (int, error) {
	for {
		fd, err := unix.Open(filepath.Join(b.dir, name(key, kind)), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("filelock: open: %w", err)
		}
		return fd, nil
	}
}

// tryLock opens key's file of kind and takes a non-blocking flock; -1
// without error when someone else has it.
func (b *semBackend) tryLock(key, kind string, how int) (int, error) {
	fd, err := b.open(key, kind)
	if err != nil {
		return -1, err
	}
	if err := flock(fd, how|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if err == unix.EWOULDBLOCK {
			return -1, nil
		}
		return -1, fmt.Errorf("filelock: flock: %w", err)
	}
	return fd, nil
}

// withLimit runs fn holding key's limit file, after checking that the key
// is used with req's limit or is idle (then it takes req's limit).
func (b *semBackend) withLimit(req lock.Request, fn func() (lock.Grant, error)) (lock.Grant, error) {
	fd, err := b.open(req.Key, "limit")
	if err != nil {
		return lock.Grant{}, err
	}
	defer unix.Close(fd)
	// Held for microseconds by whoever holds it, and freed by the kernel if
	// that process dies: a blocking flock is safe here.
	if err := flock(fd, unix.LOCK_EX); err != nil {
		return lock.Grant{}, fmt.Errorf("filelock: flock: %w", err)
	}
	buf := make([]byte, 16)
	n, _ := unix.Pread(fd, buf, 0)
	have, _ := strconv.Atoi(strings.TrimSpace(string(buf[:max(n, 0)])))
	if have != req.Share.Limit {
		if have != 0 {
			busy, err := b.busy(req.Key, have)
			if err != nil {
				return lock.Grant{}, err
			}
			if busy {
				return lock.Grant{}, &lock.LimitError{Key: req.Key, Have: have, Want: req.Share.Limit}
			}
		}
		s := fmt.Sprintf("%-16d", req.Share.Limit)
		if _, err := unix.Pwrite(fd, []byte(s), 0); err != nil {
			return lock.Grant{}, fmt.Errorf("filelock: write limit: %w", err)
		}
	}
	return fn()
}

// busy reports whether any of key's permits under limit is held.
func (b *semBackend) busy(key string, limit int) (bool, error) {
	kinds := []string{"rw"}
	how := unix.LOCK_EX
	if limit != lock.RWPermits {
		kinds = kinds[:0]
		for i := range limit {
			kinds = append(kinds, strconv.Itoa(i))
		}
	}
	for _, k := range kinds {
		fd, err := b.tryLock(key, k, how)
		if err != nil {
			return false, err
		}
		if fd < 0 {
			return true, nil
		}
		unix.Close(fd)
	}
	return false, nil
}

func (b *semBackend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return lock.Grant{}, lock.ErrClosed
	}
	return b.withLimit(req, func() (lock.Grant, error) {
		fd, err := b.take(req)
		if err != nil || fd < 0 {
			if err == nil {
				err = &lock.HeldError{Key: req.Key}
			}
			return lock.Grant{}, err
		}
		// The token is drawn with the permit held: any permit granted after
		// this draw gets a greater one.
		le, err := b.fence.Acquire(ctx, "haita-fence/"+name(req.Key, "fence"))
		if err != nil {
			unix.Close(fd)
			return lock.Grant{}, err
		}
		tok := le.Token()
		_ = le.Release(context.WithoutCancel(ctx))
		b.mu.Lock()
		b.held[req.Owner] = fd
		b.mu.Unlock()
		return lock.Grant{Token: tok}, nil
	})
}

// take takes a permit of req: a free slot, or the key's file shared
// (reader, behind any waiting writer) or exclusive (writer). It returns -1
// when there is none.
func (b *semBackend) take(req lock.Request) (int, error) {
	if req.Share.Limit != lock.RWPermits {
		for i := range req.Share.Limit {
			fd, err := b.tryLock(req.Key, strconv.Itoa(i), unix.LOCK_EX)
			if err != nil || fd >= 0 {
				return fd, err
			}
		}
		return -1, nil
	}
	if req.Share.Weight == 1 {
		t, err := b.tryLock(req.Key, "turnstile", unix.LOCK_SH)
		if err != nil || t < 0 {
			return -1, err // a writer waits: queue behind it
		}
		defer unix.Close(t)
		return b.tryLock(req.Key, "rw", unix.LOCK_SH)
	}
	fd, err := b.tryLock(req.Key, "rw", unix.LOCK_EX)
	if err == nil && fd >= 0 {
		b.dropTurnstile(req.Owner)
	}
	return fd, err
}

func (b *semBackend) dropTurnstile(o lock.Owner) {
	b.mu.Lock()
	t, ok := b.turnstiles[o]
	delete(b.turnstiles, o)
	b.mu.Unlock()
	if ok {
		unix.Close(t)
	}
}

// Refresh has nothing to extend: file locks do not expire.
func (b *semBackend) Refresh(context.Context, lock.Request) error { return nil }

func (b *semBackend) Release(_ context.Context, req lock.Request) error {
	b.mu.Lock()
	fd, ok := b.held[req.Owner]
	delete(b.held, req.Owner)
	b.mu.Unlock()
	if !ok {
		return lock.ErrNotHeld
	}
	return unix.Close(fd)
}

// Subscribe implements lock.Notifier for a waiting writer: it takes the
// key's turnstile, so that readers coming after it wait, and gives it back
// when the wait ends. Wake-ups come from a poll of
// lock.Options.PollInterval, as the files give no notification.
func (b *semBackend) Subscribe(ctx context.Context, req lock.Request) (lock.Subscription, error) {
	s := &pollSub{c: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if req.Share.Limit == lock.RWPermits && req.Share.Weight > 1 {
		s.drop = func() { b.dropTurnstile(req.Owner) }
		// Wait for the turnstile: other waiting writers hold it only until
		// they are granted, and readers only for a moment.
		for {
			t, err := b.tryLock(req.Key, "turnstile", unix.LOCK_EX)
			if err != nil {
				return nil, err
			}
			if t >= 0 {
				b.mu.Lock()
				b.turnstiles[req.Owner] = t
				b.mu.Unlock()
				break
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(b.opts.PollInterval / 4):
			}
		}
	}
	go s.run(b.opts.PollInterval / 2)
	return s, nil
}

// pollSub wakes its waiter every interval until closed.
type pollSub struct {
	c    chan struct{}
	stop chan struct{}
	done chan struct{}
	drop func()
	once sync.Once
}

func (s *pollSub) run(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(max(interval, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			select {
			case s.c <- struct{}{}:
			default:
			}
		}
	}
}

func (s *pollSub) C() <-chan struct{} { return s.c }

func (s *pollSub) Close() {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		if s.drop != nil {
			s.drop()
		}
	})
}
