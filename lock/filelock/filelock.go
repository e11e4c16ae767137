//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package filelock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/haita/haita/lock"
)

// DefaultPollInterval is the longest pause between two attempts of a waiter
// whose key is held by another process. flock(2) gives no notification across
// processes, so that waiter retries a non-blocking flock: first after about
// 1ms, doubling up to this interval, each pause jittered to between half and
// all of it. One attempt is one system call on a file already open, and only
// one goroutine per key and process polls (the others wait in the in-process
// queue), so 10ms costs little while a short critical section in another
// process is noticed within a millisecond or two.
const DefaultPollInterval = 10 * time.Millisecond

// Locker holds flock(2) locks on files in one directory, one file per key.
// It excludes goroutines of this process (waiting in a FIFO queue) and other
// processes on the machine (waiting by polling) alike. A Locker is safe for
// concurrent use; its zero value is not usable: call [New]. Leases have no
// expiry; they end on Release, or when the process ends.
type Locker struct {
	core lock.Locker
	b    *backend
}

var (
	_ lock.Locker  = (*Locker)(nil)
	_ lock.Backend = (*backend)(nil)
	_ lock.Queuer  = (*backend)(nil)
)

var caps = lock.Capabilities{
	Name:         "filelock",
	Fencing:      true,
	CrossProcess: true,
	// FIFO holds within one process only, and Notify likewise: across
	// processes waiters poll and the first attempt after a release wins.
	FIFO:   false,
	Notify: false,
}

// New returns a Locker whose lock files live in dir, which it creates with
// mode 0o700 (and missing parents) when it does not exist. Every process that
// must be excluded uses the same dir. It returns an error matching
// lock.ErrInvalidOptions for an empty dir, a dir that is not a writable
// directory, or invalid opts. The caller must Close the Locker.
//
// opts.TTL must be zero: a file lock does not expire; the operating system
// frees it when its holder's process ends. AutoRefresh and Drift have no
// effect. PollInterval zero selects [DefaultPollInterval].
func New(dir string, opts lock.Options) (*Locker, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: filelock: empty directory", lock.ErrInvalidOptions)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: filelock: directory %q: %v", lock.ErrInvalidOptions, dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("%w: filelock: %v", lock.ErrInvalidOptions, err)
	}
	dfd, err := openDir(abs)
	if err != nil {
		return nil, fmt.Errorf("%w: filelock: directory %q: %v", lock.ErrInvalidOptions, abs, err)
	}
	if err := unix.Access(abs, unix.W_OK|unix.X_OK); err != nil {
		unix.Close(dfd)
		return nil, fmt.Errorf("%w: filelock: directory %q is not writable: %v", lock.ErrInvalidOptions, abs, err)
	}
	poll := opts.PollInterval
	if poll == 0 {
		poll = DefaultPollInterval
	}
	b := &backend{
		dir:    abs,
		dirfd:  dfd,
		boot:   bootID(),
		pid:    os.Getpid(),
		holder: opts.Holder,
		poll:   poll,
		keys:   make(map[string]*entry),
	}
	if b.boot != "" {
		if err := b.raiseEpoch(0, false); err != nil {
			unix.Close(dfd)
			return nil, err
		}
	}
	core, err := lock.New(b, opts)
	if err != nil {
		unix.Close(dfd)
		return nil, err
	}
	return &Locker{core: core, b: b}, nil
}

// Acquire waits until key is free in this process and in every other
// process using the same directory, then takes it; see [lock.Locker.Acquire].
// Goroutines of this process are served in arrival order; another process
// gets the key when its next attempt finds it free.
func (l *Locker) Acquire(ctx context.Context, key string) (*lock.Lease, error) {
	return l.core.Acquire(ctx, key)
}

// TryAcquire takes key if no goroutine of this process holds it or waits
// for it and no other process holds it; otherwise it returns a
// *lock.HeldError (matching lock.ErrNotAcquired) at once, naming the holder
// recorded in the lock file when there is one.
func (l *Locker) TryAcquire(ctx context.Context, key string) (*lock.Lease, error) {
	return l.core.TryAcquire(ctx, key)
}

// Capabilities reports fencing and cross-process exclusion; filelock has no
// TTL (the OS frees a dead holder's lock), and its FIFO order and wake-up by
// notification hold only within one process, so both are reported false.
func (l *Locker) Capabilities() lock.Capabilities { return caps }

// Waiting returns how many Acquire calls of this Locker wait for key; see
// [lock.Locker.Waiting].
func (l *Locker) Waiting(key string) int { return l.core.Waiting(key) }

// Close makes waiting and later Acquire calls return lock.ErrClosed. Leases
// already granted stay held until released. Close is idempotent.
func (l *Locker) Close() error { return l.core.Close() }

// Dir returns the absolute path of the lock directory.
func (l *Locker) Dir() string { return l.b.dir }

// Path returns the path of key's lock file; see [FileName]. It returns an
// error matching lock.ErrInvalidKey for an invalid key.
func (l *Locker) Path(key string) (string, error) {
	name, err := FileName(key)
	if err != nil {
		return "", err
	}
	return filepath.Join(l.b.dir, name), nil
}

// backend implements lock.Backend and lock.Queuer.
//
// In-process guard: keys maps a key to the entry of the goroutine that
// occupies it — the holder, or the one goroutine trying flock for it — and
// the goroutines queued behind it. Only the occupant touches entry.fd, so
// goroutines never share a locked descriptor and a goroutine of this process
// never takes a key another goroutine holds through its own descriptor. The
// entry is deleted when nobody occupies or waits: no memory per free key.
type backend struct {
	dir    string
	boot   string
	pid    int
	holder string
	poll   time.Duration
	epoch  atomic.Uint64 // the directory's epoch in this boot; see record.go

	dirMu  sync.RWMutex // guards dirfd against Close
	dirfd  int          // -1 after Close
	closed bool

	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	owner   lock.Owner // the occupant
	held    bool       // the occupant holds the flock and has its token
	fd      int        // the key's file, open while the entry exists; -1 before
	waiters []*waiter  // FIFO
}

type waiter struct {
	owner  lock.Owner
	ready  chan struct{} // closed when the waiter becomes the occupant
	handed bool          // guarded by backend.mu
}

func (b *backend) Capabilities() lock.Capabilities { return caps }
func (b *backend) DefaultTTL() time.Duration       { return 0 }

// Try occupies the key in this process if nobody does, then makes one
// non-blocking flock attempt.
func (b *backend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	b.mu.Lock()
	if e, ok := b.keys[req.Key]; ok {
		held := &lock.HeldError{Key: req.Key}
		if e.held {
			held.Holder = b.holder
		}
		b.mu.Unlock()
		return lock.Grant{}, held
	}
	e := &entry{owner: req.Owner, fd: -1}
	b.keys[req.Key] = e
	b.mu.Unlock()
	g, err := b.attempt(req, e)
	if err != nil {
		b.leave(req.Key, e)
	}
	return g, err
}

// Wait queues behind the goroutine of this process that occupies the key,
// then polls flock until it succeeds or ctx ends.
func (b *backend) Wait(ctx context.Context, req lock.Request) (lock.Grant, error) {
	b.mu.Lock()
	e, ok := b.keys[req.Key]
	if !ok {
		e = &entry{owner: req.Owner, fd: -1}
		b.keys[req.Key] = e
		b.mu.Unlock()
	} else {
		w := &waiter{owner: req.Owner, ready: make(chan struct{})}
		e.waiters = append(e.waiters, w)
		b.mu.Unlock()
		select {
		case <-w.ready:
		case <-ctx.Done():
			b.mu.Lock()
			if !w.handed {
				for i, x := range e.waiters {
					if x == w {
						e.waiters = append(e.waiters[:i], e.waiters[i+1:]...)
						break
					}
				}
				b.mu.Unlock()
				return lock.Grant{}, ctx.Err()
			}
			b.mu.Unlock()
			b.leave(req.Key, e) // handed the key as ctx ended: pass it on
			return lock.Grant{}, ctx.Err()
		}
	}
	// This goroutine occupies the key now; other processes may still hold it.
	var timer *time.Timer
	delay := time.Millisecond
	for {
		g, err := b.attempt(req, e)
		if err == nil {
			return g, nil
		}
		if !errors.Is(err, lock.ErrNotAcquired) {
			b.leave(req.Key, e)
			return lock.Grant{}, err
		}
		d := delay/2 + rand.N(delay/2+1)
		delay = min(2*delay, b.poll)
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		} else {
			timer.Reset(d)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			b.leave(req.Key, e)
			return lock.Grant{}, ctx.Err()
		}
	}
}

// attempt is one non-blocking flock by the occupant of e, followed, when it
// succeeds, by the token update in the file.
func (b *backend) attempt(req lock.Request, e *entry) (lock.Grant, error) {
	if e.fd < 0 {
		fd, err := b.open(req.Key)
		if err != nil {
			return lock.Grant{}, err
		}
		e.fd = fd
	}
	if err := flock(e.fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return lock.Grant{}, b.heldError(req.Key, e.fd)
		}
		return lock.Grant{}, fmt.Errorf("filelock: flock %q: %w", req.Key, err)
	}
	tok, err := b.advance(req, e.fd)
	if err != nil {
		_ = flock(e.fd, unix.LOCK_UN)
		return lock.Grant{}, err
	}
	b.mu.Lock()
	e.held = true
	b.mu.Unlock()
	return lock.Grant{Token: lock.Token(tok)}, nil
}

// advance reads the token record of the locked file fd, writes the next one
// and returns its token.
func (b *backend) advance(req lock.Request, fd int) (uint64, error) {
	buf := make([]byte, maxRecord)
	n, err := preadFull(fd, buf)
	if err != nil {
		return 0, fmt.Errorf("filelock: read %q: %w", req.Key, err)
	}
	prev, err := parseRecord(buf[:n])
	if err != nil {
		name, _ := FileName(req.Key)
		return 0, fmt.Errorf("filelock: lock file %s: %w; its fencing token cannot be trusted", filepath.Join(b.dir, name), err)
	}
	var tok uint64
	var sync bool
	for {
		var bump bool
		tok, sync, bump, err = next(prev, b.boot, b.epoch.Load())
		if err != nil {
			return 0, fmt.Errorf("filelock: key %q: %w", req.Key, err)
		}
		if !bump {
			break
		}
		if err := b.raiseEpoch(prev.token>>counterBits, true); err != nil {
			return 0, err
		}
	}
	rec := record{token: tok, boot: b.boot, pid: b.pid, holder: req.Holder}.marshal(n)
	if err := pwriteFull(fd, rec); err != nil {
		return 0, fmt.Errorf("filelock: write %q: %w", req.Key, err)
	}
	if sync {
		if err := unix.Fsync(fd); err != nil {
			return 0, fmt.Errorf("filelock: fsync %q: %w", req.Key, err)
		}
		if err := b.syncDir(); err != nil {
			return 0, fmt.Errorf("filelock: fsync %s: %w", b.dir, err)
		}
	}
	return tok, nil
}

// heldError reports a key held by another process, with the holder its
// lock file names (best effort: read without the lock).
func (b *backend) heldError(key string, fd int) error {
	held := &lock.HeldError{Key: key}
	buf := make([]byte, maxRecord)
	if n, err := preadFull(fd, buf); err == nil {
		if r, err := parseRecord(buf[:n]); err == nil {
			held.Holder = r.holder
			if held.Holder == "" && r.pid != 0 {
				held.Holder = fmt.Sprintf("pid %d", r.pid)
			}
		}
	}
	return held
}

// leave ends e's occupancy by its current occupant (which no longer holds
// the flock): the first waiter becomes the occupant, or the entry goes and
// its file is closed.
func (b *backend) leave(key string, e *entry) {
	b.mu.Lock()
	e.held = false
	if len(e.waiters) > 0 {
		w := e.waiters[0]
		e.waiters[0] = nil
		e.waiters = e.waiters[1:]
		e.owner = w.owner
		w.handed = true
		close(w.ready)
		b.mu.Unlock()
		return
	}
	delete(b.keys, key)
	fd := e.fd
	b.mu.Unlock()
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}

// Refresh has nothing to extend; it reports whether req still holds the key.
func (b *backend) Refresh(ctx context.Context, req lock.Request) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.keys[req.Key]; !ok || !e.held || e.owner != req.Owner {
		return fmt.Errorf("filelock: refresh %q: %w", req.Key, lock.ErrNotHeld)
	}
	return nil
}

// Release unlocks the file and passes the key to the next goroutine of this
// process, if any.
func (b *backend) Release(ctx context.Context, req lock.Request) error {
	b.mu.Lock()
	e, ok := b.keys[req.Key]
	if !ok || !e.held || e.owner != req.Owner {
		b.mu.Unlock()
		return fmt.Errorf("filelock: release %q: %w", req.Key, lock.ErrNotHeld)
	}
	e.held = false // still occupied: nobody else in this process can take it yet
	b.mu.Unlock()
	err := flock(e.fd, unix.LOCK_UN)
	if err != nil {
		// Closing the descriptor releases the lock all the same.
		b.mu.Lock()
		fd := e.fd
		e.fd = -1
		b.mu.Unlock()
		_ = unix.Close(fd)
	}
	b.leave(req.Key, e)
	return nil
}

// Close closes the directory; leases already granted keep their files open
// until released.
func (b *backend) Close() error {
	b.dirMu.Lock()
	defer b.dirMu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	err := unix.Close(b.dirfd)
	b.dirfd = -1
	return err
}

// open opens (creating with mode 0o600) key's lock file, refusing symbolic
// links. The descriptor is close-on-exec so that a child process never
// inherits — and keeps — a lock.
func (b *backend) open(key string) (int, error) {
	name, err := FileName(key)
	if err != nil {
		return -1, err
	}
	return b.openName(name)
}

func (b *backend) openName(name string) (int, error) {
	b.dirMu.RLock()
	defer b.dirMu.RUnlock()
	if b.closed {
		return -1, lock.ErrClosed
	}
	for {
		fd, err := unix.Openat(b.dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("filelock: open %s: %w", filepath.Join(b.dir, name), err)
		}
		return fd, nil
	}
}

// epochFile holds the directory's epoch record; key files start with "k-"
// or "h-".
const epochFile = "epoch"

// raiseEpoch loads the directory's epoch into b.epoch. It raises the stored
// epoch by one (and above the given epoch), with fsync of the file and the
// directory, when force is set or the record is from an earlier boot. The
// epoch file's flock is held for a read, a write and two fsyncs; it is never
// held while waiting for another lock.
func (b *backend) raiseEpoch(above uint64, force bool) error {
	fd, err := b.openName(epochFile)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := flock(fd, unix.LOCK_EX); err != nil {
		return fmt.Errorf("filelock: flock %s: %w", epochFile, err)
	}
	defer flock(fd, unix.LOCK_UN)
	buf := make([]byte, maxRecord)
	n, err := preadFull(fd, buf)
	if err != nil {
		return fmt.Errorf("filelock: read %s: %w", epochFile, err)
	}
	rec, err := parseRecord(buf[:n])
	if err != nil {
		return fmt.Errorf("filelock: %s: %w; fencing tokens cannot be trusted", filepath.Join(b.dir, epochFile), err)
	}
	e := rec.token >> counterBits
	if force || e == 0 || rec.boot != b.boot {
		e = max(e, above) + 1
		if e > maxEpoch {
			return errors.New("filelock: fencing tokens exhausted")
		}
		out := record{token: e << counterBits, boot: b.boot, pid: b.pid, holder: b.holder}.marshal(n)
		if err := pwriteFull(fd, out); err != nil {
			return fmt.Errorf("filelock: write %s: %w", epochFile, err)
		}
		if err := unix.Fsync(fd); err != nil {
			return fmt.Errorf("filelock: fsync %s: %w", epochFile, err)
		}
		if err := b.syncDir(); err != nil {
			return fmt.Errorf("filelock: fsync %s: %w", b.dir, err)
		}
	}
	for {
		cur := b.epoch.Load()
		if cur >= e || b.epoch.CompareAndSwap(cur, e) {
			return nil
		}
	}
}

func (b *backend) syncDir() error {
	b.dirMu.RLock()
	defer b.dirMu.RUnlock()
	if b.closed {
		return lock.ErrClosed
	}
	return unix.Fsync(b.dirfd)
}

func openDir(dir string) (int, error) {
	for {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if err != unix.EINTR {
			return err
		}
	}
}

// preadFull reads from offset 0 until buf is full or the end of the file: a
// short read of a regular file means its end.
func preadFull(fd int, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := unix.Pread(fd, buf[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
		if m == 0 || n < len(buf) {
			break
		}
	}
	return n, nil
}

func pwriteFull(fd int, buf []byte) error {
	n := 0
	for n < len(buf) {
		m, err := unix.Pwrite(fd, buf[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		n += m
	}
	return nil
}
