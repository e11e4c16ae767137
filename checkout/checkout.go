package checkout

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Options configure a [Manager]. The zero value is valid and selects every
// default. Options are passed by value and never modified.
type Options struct {
	// Idle is how long a checkout lives without a heartbeat (or save): a
	// checkout whose last heartbeat is Idle ago has expired. Zero selects
	// 10 minutes. Must not be negative.
	Idle time.Duration
	// MaxAge is the longest a checkout lives, heartbeats or not, counted
	// from the moment it was taken: the user who leaves for a holiday does
	// not block everyone for weeks. Zero selects 8 hours. Must not be
	// negative.
	MaxAge time.Duration
	// Now is the clock. Nil selects time.Now. Tests inject a fake clock.
	// Liveness is judged by this clock against times stored by every
	// process sharing the store: keep the machines' clocks synchronised.
	Now func() time.Time
	// Retention is how long [Manager.Sweep] keeps the record of a broken or
	// expired checkout, so that its former holder still learns why on his
	// next Heartbeat or Save. Zero selects 7 days. Must not be negative.
	Retention time.Duration
}

// Default option values.
const (
	DefaultIdle      = 10 * time.Minute
	DefaultMaxAge    = 8 * time.Hour
	DefaultRetention = 7 * 24 * time.Hour
)

// Limits on the strings a Manager stores.
const (
	// MaxResourceLen is the longest resource name in bytes.
	MaxResourceLen = 512
	// MaxNameLen is the longest owner or breaker name in bytes.
	MaxNameLen = 256
	// MaxReasonLen is the longest break reason in bytes.
	MaxReasonLen = 2000
)

// Checkout is one user's claim to edit a resource. It is a plain value.
type Checkout struct {
	Resource string
	// Owner is the user holding the checkout, as shown to others.
	Owner string
	// Token is the secret handed to the holder: Heartbeat, Release and Save
	// need it. Never show it to other users. Other users' checkouts, as
	// returned by [Manager.Get] and in a [HeldError], carry no Token.
	Token string
	// Since is when the checkout was taken.
	Since time.Time
	// LastBeat is the last heartbeat (or acquire, or save).
	LastBeat time.Time
	// Until is min(LastBeat+Idle, Since+MaxAge): the checkout ends then at
	// the latest unless renewed.
	Until time.Time
	// Fence is a fencing token where the store has one ([LockStore] over a
	// backend with fencing): strictly greater for every later checkout of
	// the resource. Zero otherwise.
	Fence uint64
}

// live reports whether c still blocks others at now.
func (c Checkout) live(now time.Time) bool { return now.Before(c.Until) }

// Sentinel errors. Match them with errors.Is.
var (
	// ErrHeld is matched by a *[HeldError]: another owner holds the
	// resource.
	ErrHeld = errors.New("checkout: resource is checked out by another owner")
	// ErrExpired is returned by Heartbeat, Release and Save when the
	// caller's checkout has expired (idle limit or maximum age); it may
	// have been taken by someone else since. Acquire again to go on.
	ErrExpired = errors.New("checkout: checkout expired")
	// ErrBroken is matched by a *[BrokenError]: an administrator broke the
	// caller's checkout.
	ErrBroken = errors.New("checkout: checkout was broken")
	// ErrNotHeld is returned when the token does not hold the resource and
	// nothing more is known: released, never taken, a wrong token, or an
	// ended checkout whose record was swept. Break returns it when there is
	// no live checkout to break.
	ErrNotHeld = errors.New("checkout: not checked out with this token")
	// ErrInvalid is returned for an empty or oversized resource, owner or
	// token, and by constructors for invalid options.
	ErrInvalid = errors.New("checkout: invalid argument")
	// ErrNoTransaction is returned by [Manager.Save] when the store cannot
	// verify a checkout inside a database transaction ([LockStore]).
	ErrNoTransaction = errors.New("checkout: store has no transactions; Save needs the SQL store")
)

// HeldError reports that another owner holds a resource: who, since when
// and until when at the latest. It matches [ErrHeld]. Its fields have the
// names of httpcc.LockedError, so an HTTP handler answers 423 Locked with
//
//	&httpcc.LockedError{Holder: he.Holder, Since: he.Since, Until: he.Until}
type HeldError struct {
	Resource string
	Holder   string    // the holding owner; for a LockStore checkout of another process, its lock holder name
	Since    time.Time // zero when unknown
	Until    time.Time // zero when unknown
}

func (e *HeldError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "checkout: %q is checked out", e.Resource)
	if e.Holder != "" {
		fmt.Fprintf(&b, " by %s", e.Holder)
	}
	if !e.Since.IsZero() {
		fmt.Fprintf(&b, " since %s", e.Since.UTC().Format(time.RFC3339))
	}
	if !e.Until.IsZero() {
		fmt.Fprintf(&b, " until %s", e.Until.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// Is makes a HeldError match ErrHeld.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// BrokenError tells the former holder that an administrator broke his
// checkout: who, when and why. It matches [ErrBroken].
type BrokenError struct {
	Resource string
	Owner    string // the former holder
	By       string
	At       time.Time
	Reason   string
}

func (e *BrokenError) Error() string {
	s := fmt.Sprintf("checkout: %q was broken by %s at %s", e.Resource, e.By, e.At.UTC().Format(time.RFC3339))
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Is makes a BrokenError match ErrBroken.
func (e *BrokenError) Is(target error) bool { return target == ErrBroken }

// Manager hands out checkouts through a [Store]. It is safe for concurrent
// use by multiple goroutines, and several Managers (in one process or many)
// may share one store: every decision is made atomically by the store. The
// zero value is not usable: call [New].
type Manager struct {
	store Store
	opts  Options
}

// New returns a Manager on store. It returns an error matching [ErrInvalid]
// for a nil store or invalid options. The Manager has no background work
// and needs no Close; the store's owner closes the store.
func New(store Store, opts Options) (*Manager, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalid)
	}
	switch {
	case opts.Idle < 0:
		return nil, fmt.Errorf("%w: Idle %v is negative", ErrInvalid, opts.Idle)
	case opts.MaxAge < 0:
		return nil, fmt.Errorf("%w: MaxAge %v is negative", ErrInvalid, opts.MaxAge)
	case opts.Retention < 0:
		return nil, fmt.Errorf("%w: Retention %v is negative", ErrInvalid, opts.Retention)
	}
	if opts.Idle == 0 {
		opts.Idle = DefaultIdle
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Retention == 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Manager{store: store, opts: opts}, nil
}

func (m *Manager) request(resource string) Request {
	return Request{Resource: resource, Now: m.opts.Now(), Idle: m.opts.Idle, MaxAge: m.opts.MaxAge}
}

// Acquire checks resource out for owner and returns the checkout with its
// Token. When owner already holds it (another tab, a reload), Acquire renews
// that checkout and returns it with the same Token and Since. When another
// owner holds a live checkout it returns a *[HeldError] (matching
// [ErrHeld]) naming the holder, Since and Until. A checkout that has
// expired never blocks: Acquire judges expiry itself, whether or not a
// sweeper ran, and records the expiry for the former holder.
func (m *Manager) Acquire(ctx context.Context, resource, owner string) (Checkout, error) {
	if err := validate(resource, owner); err != nil {
		return Checkout{}, err
	}
	req := m.request(resource)
	req.Owner = owner
	req.Token = newToken()
	return m.store.Acquire(ctx, req)
}

// Heartbeat renews the checkout that token holds: LastBeat becomes now and
// Until min(now+Idle, Since+MaxAge). It returns [ErrExpired] when the
// checkout expired (heartbeats do not revive it: Acquire again), a
// *[BrokenError] (matching [ErrBroken]) when an administrator broke it, and
// [ErrNotHeld] otherwise.
func (m *Manager) Heartbeat(ctx context.Context, resource, token string) (Checkout, error) {
	if err := validate(resource, token); err != nil {
		return Checkout{}, err
	}
	req := m.request(resource)
	req.Token = token
	return m.store.Heartbeat(ctx, req)
}

// Release ends the checkout that token holds. Releasing an expired
// checkout that nobody took since succeeds. It returns a *[BrokenError]
// when the checkout was broken, [ErrExpired] when it expired and was
// taken or swept, and [ErrNotHeld] otherwise; the current holder, if any,
// is left untouched.
func (m *Manager) Release(ctx context.Context, resource, token string) error {
	if err := validate(resource, token); err != nil {
		return err
	}
	req := m.request(resource)
	req.Token = token
	return m.store.Release(ctx, req)
}

// ReleaseOwner ends every live checkout owner holds (logout, session end)
// and returns how many it ended.
func (m *Manager) ReleaseOwner(ctx context.Context, owner string) (int, error) {
	if err := validate("-", owner); err != nil {
		return 0, err
	}
	req := m.request("")
	req.Owner = owner
	return m.store.ReleaseOwner(ctx, req)
}

// Break ends the live checkout of resource on an administrator's behalf
// and records who broke it, when and why, durably in the store: the former
// holder gets a *[BrokenError] on his next Heartbeat, Save or Release, from
// any process sharing the store. It returns the checkout that was broken
// (without its Token), or [ErrNotHeld] when none was live.
func (m *Manager) Break(ctx context.Context, resource, by, reason string) (Checkout, error) {
	if err := validate(resource, by); err != nil {
		return Checkout{}, err
	}
	if len(reason) > MaxReasonLen || !utf8.ValidString(reason) {
		return Checkout{}, fmt.Errorf("%w: reason must be valid UTF-8 of at most %d bytes", ErrInvalid, MaxReasonLen)
	}
	req := m.request(resource)
	req.By, req.Reason = by, reason
	c, err := m.store.Break(ctx, req)
	c.Token = ""
	return c, err
}

// Get returns the live checkout of resource, without its Token, and
// whether there is one. Expired checkouts are not returned.
func (m *Manager) Get(ctx context.Context, resource string) (Checkout, bool, error) {
	if err := validate(resource, "-"); err != nil {
		return Checkout{}, false, err
	}
	c, ok, err := m.store.Get(ctx, m.request(resource))
	c.Token = ""
	return c, ok, err
}

// Save verifies the checkout and runs fn in one database transaction: the
// checkout's row is locked, must be live, held by token and not broken;
// then it counts as a heartbeat and fn runs in the same transaction, which
// commits only if fn returns nil. A save after expiry or break is refused
// ([ErrExpired], *[BrokenError], [ErrNotHeld]) and fn does not run, so it
// is never applied. Nobody can break or take the checkout while the
// transaction runs: Break and Acquire wait for the row lock.
//
// The transaction is retried (fn runs again) on a deadlock, a
// serialization failure or SQLite busy, as sqlcc.RunTx does; only the
// committed run is applied. fn must use tx for its writes and return the
// errors it gets. Save returns [ErrNoTransaction] when the store is not
// transactional (a [LockStore]).
func (m *Manager) Save(ctx context.Context, resource, token string, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if err := validate(resource, token); err != nil {
		return err
	}
	ts, ok := m.store.(TxStore)
	if !ok {
		return ErrNoTransaction
	}
	req := m.request(resource)
	req.Token = token
	return ts.Save(ctx, req, fn)
}

// Sweep removes expired checkouts from the store (recording them for their
// former holders) and forgets break and expiry records older than
// Options.Retention. It returns how many expired checkouts it removed.
// Running it is optional: expired checkouts never block anyone.
func (m *Manager) Sweep(ctx context.Context) (int, error) {
	req := m.request("")
	req.Retention = m.opts.Retention
	return m.store.Sweep(ctx, req)
}

// validate checks a resource name and a name or token.
func validate(resource, name string) error {
	for _, f := range []struct {
		what, v string
		max     int
	}{{"resource", resource, MaxResourceLen}, {"owner, breaker or token", name, MaxNameLen}} {
		if f.v == "" || len(f.v) > f.max || !utf8.ValidString(f.v) || strings.IndexByte(f.v, 0) >= 0 {
			return fmt.Errorf("%w: %s must be non-empty valid UTF-8 without NUL of at most %d bytes", ErrInvalid, f.what, f.max)
		}
	}
	return nil
}

// newToken returns 128 random bits as 32 hex digits.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// until computes min(beat+idle, since+maxAge).
func until(since, beat time.Time, idle, maxAge time.Duration) time.Time {
	a, b := beat.Add(idle), since.Add(maxAge)
	if b.Before(a) {
		return b
	}
	return a
}
