package lock

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Locker hands out leases on string keys. Implementations are safe for
// concurrent use by multiple goroutines.
type Locker interface {
	// Acquire waits until key is free and takes it. It returns when the lease
	// is granted, when ctx ends (an error matching ctx.Err()), or when
	// Options.WaitLimit passes ([ErrWaitLimit]). On error nothing is held,
	// but for an attempt that was in flight at the engine when ctx ended:
	// a backend that lets such an attempt finish ([Detached]) gives a
	// grant it gets back as soon as the engine answers.
	// The caller must Release the lease.
	Acquire(ctx context.Context, key string) (*Lease, error)

	// TryAcquire makes one attempt and does not wait: when key is held it
	// returns an error matching [ErrNotAcquired] (a *[HeldError]).
	TryAcquire(ctx context.Context, key string) (*Lease, error)

	// Capabilities reports what the backend offers.
	Capabilities() Capabilities

	// Waiting returns how many Acquire calls of this Locker are waiting for
	// key: they found it held and wait for a release (subscribed where the
	// backend notifies), the wait limit or their context. It is meant for
	// tests, which wait for it instead of sleeping, and for inspection.
	Waiting(key string) int

	// Holder reads who holds key now, without waiting or taking a place in
	// line. It returns an error matching [ErrNoHolder] when key is free,
	// and [ErrUnsupported] when the backend cannot tell.
	Holder(ctx context.Context, key string) (HolderInfo, error)

	// WatchHolder returns a subscription that is woken when key's holder
	// may have changed, by the engine's notification; it returns an error
	// matching [ErrUnsupported] when the backend has none (then poll
	// Holder). The caller must Close the subscription.
	WatchHolder(ctx context.Context, key string) (Subscription, error)

	// Close stops the Locker's background work and waits for it. Waiting
	// Acquire calls return [ErrClosed]; leases already granted still
	// Release. Close is idempotent.
	Close() error
}

// Token is a fencing token: for one key, every later holder gets a strictly
// greater token. Zero means the backend gives none (Capabilities.Fencing is
// false). Compare tokens with <; storage keeps the greatest token that wrote
// and refuses smaller ones.
type Token uint64

// Owner is the random value that identifies one lease to the engine: 128 bits
// from crypto/rand. Only the holder of the value can refresh or release.
type Owner [16]byte

// NewOwner returns a fresh random Owner. The bits come from ChaCha8
// generators, a cryptographically strong generator, each seeded from
// crypto/rand and pooled so that concurrent callers do not contend; a
// system call per lease would cost more than an in-process lock.
func NewOwner() Owner {
	g := owners.Get().(*mrand.ChaCha8)
	var o Owner
	binary.LittleEndian.PutUint64(o[:8], g.Uint64())
	binary.LittleEndian.PutUint64(o[8:], g.Uint64())
	owners.Put(g)
	return o
}

var owners = sync.Pool{New: func() any {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	return mrand.NewChaCha8(seed)
}}

// String returns the owner as 32 lowercase hex digits: the value backends
// store.
func (o Owner) String() string { return hex.EncodeToString(o[:]) }

// MaxKeyLen is the longest key, in bytes, that every backend accepts.
const MaxKeyLen = 512

// ValidateKey reports why key cannot be used as a lock key: empty, longer
// than [MaxKeyLen] bytes, invalid UTF-8 or containing a NUL byte. The error
// is a *[KeyError] matching [ErrInvalidKey].
func ValidateKey(key string) error {
	var reason string
	switch {
	case key == "":
		reason = "empty"
	case len(key) > MaxKeyLen:
		reason = fmt.Sprintf("%d bytes, longer than the limit of %d", len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		reason = "not valid UTF-8"
	case strings.IndexByte(key, 0) >= 0:
		reason = "contains a NUL byte"
	default:
		return nil
	}
	return &KeyError{Key: key, Reason: reason}
}

// Capabilities says what a backend offers. The conformance suite runs the
// tests that apply; the README prints the table.
type Capabilities struct {
	// Name is the backend's short name, such as "redis" or "memlock".
	Name string
	// TTL: leases expire on their own unless refreshed.
	TTL bool
	// Fencing: tokens strictly increase for every later holder of a key.
	Fencing bool
	// FIFO: waiters are granted the key in the order they started waiting.
	FIFO bool
	// LossDetection: Refresh learns from the engine that a lease is gone
	// (taken over after expiry) and ends it, beyond the local deadline
	// every TTL backend keeps.
	LossDetection bool
	// FailoverSafe: losing one engine node cannot grant a key twice.
	FailoverSafe bool
	// CrossProcess: excludes other processes, not only goroutines.
	CrossProcess bool
	// Notify: a release wakes waiters by notification, not by polling.
	Notify bool
	// Semaphore and RWLock: the backend honours [Request.Share], so
	// [NewSemaphore] and [NewRWLocker] accept it.
	Semaphore bool
	RWLock    bool
}

// Options configure a [Locker]. The zero value is valid and selects every
// default. Backends accept Options by value and never modify them.
type Options struct {
	// TTL is how long a lease lives unless refreshed. Zero selects the
	// backend's default, which its package documents (network backends:
	// 30s). Must not be negative; backends without Capabilities.TTL reject
	// a non-zero TTL.
	TTL time.Duration

	// AutoRefresh keeps every lease alive by refreshing it every TTL/3 until
	// it is released. When refreshing keeps failing until the local
	// deadline, the lease's Done channel closes and Err returns [ErrLost].
	// Ignored by backends without TTL.
	AutoRefresh bool

	// WaitLimit bounds how long Acquire waits. Zero means no limit beyond
	// the context. Must not be negative.
	WaitLimit time.Duration

	// PollInterval is the fallback poll while waiting for a notification
	// that may have been lost; each wait is jittered to between half and the
	// whole interval. Zero selects the backend's default (usually 1s, or
	// 50ms for backends without notification). Must not be negative.
	PollInterval time.Duration

	// Drift is the allowance for clock drift subtracted from the TTL when
	// computing a lease's local deadline. Zero selects TTL/100 + 2ms. Must
	// be smaller than the TTL.
	Drift time.Duration

	// Holder is a human-readable name of this client (for example
	// "api-3/pid 812") that backends able to store it show to others in
	// [HeldError]. It is not a secret and grants nothing.
	Holder string

	// Metrics, when non-nil, records acquire waits, hold times, contention,
	// refresh failures and lost leases.
	Metrics *Metrics
}

// Validate reports the first invalid option, as an error matching
// [ErrInvalidOptions].
func (o Options) Validate() error {
	switch {
	case o.TTL < 0:
		return fmt.Errorf("%w: TTL %v is negative", ErrInvalidOptions, o.TTL)
	case o.WaitLimit < 0:
		return fmt.Errorf("%w: WaitLimit %v is negative", ErrInvalidOptions, o.WaitLimit)
	case o.PollInterval < 0:
		return fmt.Errorf("%w: PollInterval %v is negative", ErrInvalidOptions, o.PollInterval)
	case o.Drift < 0:
		return fmt.Errorf("%w: Drift %v is negative", ErrInvalidOptions, o.Drift)
	case o.TTL > 0 && o.Drift >= o.TTL:
		return fmt.Errorf("%w: Drift %v is not smaller than TTL %v", ErrInvalidOptions, o.Drift, o.TTL)
	case len(o.Holder) > 256 || !utf8.ValidString(o.Holder):
		return fmt.Errorf("%w: Holder must be valid UTF-8 of at most 256 bytes", ErrInvalidOptions)
	}
	return nil
}

// Sentinel errors. Every error a Locker or Lease returns matches at most one
// of them (or the context's error) under [errors.Is].
var (
	// ErrNotAcquired is returned by TryAcquire when the key is held by
	// someone else. The error is a *HeldError.
	ErrNotAcquired = errors.New("lock: key is held by another owner")
	// ErrWaitLimit is returned by Acquire when Options.WaitLimit passed.
	ErrWaitLimit = errors.New("lock: wait limit passed")
	// ErrNotHeld is returned by Release and Refresh when the lease no
	// longer holds its key (it expired, was lost or was released); the
	// current holder, if any, is left untouched.
	ErrNotHeld = errors.New("lock: lease does not hold the key")
	// ErrLost is a lease's Err after it ended without Release: its local
	// deadline passed, refreshing failed, or the engine reported it gone.
	ErrLost = errors.New("lock: lease lost")
	// ErrReleased is a lease's Err after a successful Release.
	ErrReleased = errors.New("lock: lease released")
	// ErrIndeterminate is returned when the engine may or may not have
	// applied a request (a timeout or a broken connection after sending).
	// For Acquire haita has tried to undo a grant before returning it.
	ErrIndeterminate = errors.New("lock: outcome unknown")
	// ErrInvalidKey is returned for a key that ValidateKey rejects.
	ErrInvalidKey = errors.New("lock: invalid key")
	// ErrInvalidOptions is returned by constructors for invalid Options.
	ErrInvalidOptions = errors.New("lock: invalid options")
	// ErrClosed is returned by a Locker after Close.
	ErrClosed = errors.New("lock: locker closed")
)

// HeldError reports that a key is held by another owner. It matches
// [ErrNotAcquired].
type HeldError struct {
	Key string
	// Holder is the holder's Options.Holder, where the backend stores it.
	Holder string
	// ExpiresAt is when the holder's lease expires on the engine, as seen
	// by this client; zero when unknown or when the lease has no TTL.
	ExpiresAt time.Time
}

func (e *HeldError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lock: key %q is held", e.Key)
	if e.Holder != "" {
		fmt.Fprintf(&b, " by %s", e.Holder)
	}
	if !e.ExpiresAt.IsZero() {
		fmt.Fprintf(&b, " until %s", e.ExpiresAt.Format(time.RFC3339Nano))
	}
	return b.String()
}

// Is makes a HeldError match ErrNotAcquired.
func (e *HeldError) Is(target error) bool { return target == ErrNotAcquired }

// KeyError reports an invalid key. It matches [ErrInvalidKey].
type KeyError struct {
	Key    string
	Reason string
}

func (e *KeyError) Error() string {
	k := e.Key
	if len(k) > 64 {
		k = k[:64] + "…"
	}
	return fmt.Sprintf("lock: invalid key %q: %s", k, e.Reason)
}

// Is makes a KeyError match ErrInvalidKey.
func (e *KeyError) Is(target error) bool { return target == ErrInvalidKey }

// IndeterminateError reports a request whose outcome the engine did not
// confirm. It matches [ErrIndeterminate] and unwraps to the cause.
type IndeterminateError struct {
	Op  string // "acquire", "refresh" or "release"
	Key string
	Err error
}

func (e *IndeterminateError) Error() string {
	return fmt.Sprintf("lock: %s %q: outcome unknown: %v", e.Op, e.Key, e.Err)
}

// Is makes an IndeterminateError match ErrIndeterminate.
func (e *IndeterminateError) Is(target error) bool { return target == ErrIndeterminate }

// Unwrap returns the cause.
func (e *IndeterminateError) Unwrap() error { return e.Err }
