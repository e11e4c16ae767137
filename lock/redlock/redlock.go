package redlock

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redisholder"
	"github.com/haita/haita/internal/redisslot"
	"github.com/haita/haita/lock"
)

// Option configures what [New] adds to [lock.Options] for Redlock.
type Option func(*config)

type config struct {
	prefix  string
	timeout time.Duration
}

// WithPrefix prepends prefix to every lock key to form the Redis key. The
// default is none, as redsync names its keys.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithInstanceTimeout bounds each instance's answer to an acquire, so that
// a slow minority cannot eat the lease's validity: the quorum is decided
// once every instance answered or timed out. The default is a tenth of the
// TTL, at least 10ms and at most 250ms. It must be positive and below the
// TTL.
func WithInstanceTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// Locker is a [lock.Locker] over a quorum of independent Redis masters; see
// [New].
type Locker struct {
	lock.Locker
}

var _ lock.Locker = (*Locker)(nil)

// DefaultTTL is the TTL of a lease when Options.TTL is zero.
const DefaultTTL = 30 * time.Second

var (
	//go:embed acquire.lua
	acquireLua    string
	acquireScript = redis.NewScript(acquireLua)
	//go:embed raise.lua
	raiseLua    string
	raiseScript = redis.NewScript(raiseLua)
	//go:embed release.lua
	releaseLua    string
	releaseScript = redis.NewScript(releaseLua)
	//go:embed refresh.lua
	refreshLua    string
	refreshScript = redis.NewScript(refreshLua)
	//go:embed dequeue.lua
	dequeueLua    string
	dequeueScript = redis.NewScript(dequeueLua)
)

// New returns a Locker over the independent Redis masters reached through
// clients (each a *redis.Client, usually one per instance; not replicas of
// each other). A lease needs a majority, len(clients)/2+1, of them. The
// default TTL is [DefaultTTL]. When every client can also subscribe (as
// *redis.Client can), a release publishes on every instance it releases on
// and waiters are woken by that; the Locker keeps one pub/sub connection
// per instance for all its waiters, and they fall back to polling every
// opts.PollInterval (1s by default) for releases by other clients, or
// sooner when the holder's lease ends sooner. With clients that cannot
// subscribe, waiting polls every 50ms (jittered). The Locker does not close
// the clients. New returns an error matching [lock.ErrInvalidOptions] when
// clients is empty or holds a nil client, for a nil or invalid option, or
// for invalid opts.
func New(clients []redis.Scripter, opts lock.Options, options ...Option) (*Locker, error) {
	if len(clients) == 0 {
		return nil, fmt.Errorf("%w: redlock: no clients", lock.ErrInvalidOptions)
	}
	if slices.Contains(clients, nil) {
		return nil, fmt.Errorf("%w: redlock: nil client", lock.ErrInvalidOptions)
	}
	var cfg config
	for _, o := range options {
		if o == nil {
			return nil, fmt.Errorf("%w: redlock: nil Option", lock.ErrInvalidOptions)
		}
		o(&cfg)
	}
	if cfg.timeout < 0 || (cfg.timeout > 0 && opts.TTL > 0 && cfg.timeout >= opts.TTL) {
		return nil, fmt.Errorf("%w: redlock: instance timeout %v must be positive and below the TTL", lock.ErrInvalidOptions, cfg.timeout)
	}
	b := &backend{clients: slices.Clone(clients), quorum: len(clients)/2 + 1, prefix: cfg.prefix, timeout: cfg.timeout}
	var lb lock.Backend = b
	if subs, ok := subscribers(clients); ok {
		b.waiters = make(map[string]*waiter)
		b.arrivals = make(map[string]arrival)
		poll := opts.PollInterval
		if poll <= 0 {
			poll = time.Second
		}
		b.place = 3 * poll
		for _, c := range subs {
			b.hubs = append(b.hubs, newHub(c, b.wake))
		}
		lb = notifier{b}
	}
	l, err := lock.New(lb, opts)
	if err != nil {
		return nil, err
	}
	return &Locker{l}, nil
}

type backend struct {
	clients []redis.Scripter
	quorum  int
	prefix  string
	timeout time.Duration // per instance; zero: from the TTL

	// With clients that can subscribe: one pub/sub hub per instance, the
	// Locker's waiters by owner, and how long a waiter's place in an
	// instance's queue lasts without an attempt renewing it (three polls).
	// Nil and zero otherwise.
	hubs    []*hub
	place   time.Duration
	mu      sync.Mutex
	waiters map[string]*waiter

	// The clock of each waiting request's first attempt, by owner: every
	// attempt queues at it, so that a waiter that joins an instance's queue
	// later than the others' (it was granted there, where nobody queued,
	// in a vote that split; the instance missed an attempt) takes the same
	// place there, and the instances agree on the order. Guarded by mu;
	// entries go when the request is granted, released or stops waiting,
	// and a sweep drops those unused for longer than a place lasts.
	arrivals map[string]arrival
	sweepAt  int
}

// arrival is one waiting request's first attempt's clock (µs), and when it
// last attempted.
type arrival struct {
	at   string
	used time.Time
}

// waiter is one waiting Acquire of this Locker.
type waiter struct {
	key  string
	c    chan struct{} // buffered: its turn may have come
	took bool          // it got the key; guarded by backend.mu
}

// subscriber is what a client needs beyond redis.Scripter for waiters to
// be woken by notification.
type subscriber interface {
	Subscribe(ctx context.Context, channels ...string) *redis.PubSub
}

// subscribers returns the clients as subscribers if every one is.
func subscribers(clients []redis.Scripter) ([]subscriber, bool) {
	subs := make([]subscriber, len(clients))
	for i, c := range clients {
		s, ok := c.(subscriber)
		if !ok {
			return nil, false
		}
		subs[i] = s
	}
	return subs, true
}

// instanceTimeout is how long one instance may take to answer an acquire.
func (b *backend) instanceTimeout(ttl time.Duration) time.Duration {
	if b.timeout > 0 {
		return b.timeout
	}
	return min(max(ttl/10, 10*time.Millisecond), 250*time.Millisecond)
}

var _ lock.Backend = (*backend)(nil)

func (b *backend) Capabilities() lock.Capabilities {
	return lock.Capabilities{
		Name:          "redlock",
		TTL:           true,
		Fencing:       true,
		FIFO:          false,
		LossDetection: true, // refresh compares the owner on a majority
		FailoverSafe:  true, // a minority of instances may fail (see the package doc for restarts)
		CrossProcess:  true,
		Notify:        b.hubs != nil,
	}
}

func (b *backend) DefaultTTL() time.Duration { return DefaultTTL }

func (b *backend) Close() error {
	var errs []error
	for _, h := range b.hubs {
		errs = append(errs, h.close())
	}
	return errors.Join(errs...)
}

// channel is the channel a release of redisKey publishes on.
func channel(redisKey string) string { return "haita:released:" + redisKey }

// keys returns the Redis key of a lock key, the fencing counter in its hash
// slot, the key's queue of waiters and their deadlines, and its holder
// record (see holder.go).
func (b *backend) keys(key string) []string {
	k := b.prefix + key
	return []string{k, redisslot.CounterKey(k, ":"+b.prefix+"haita:fence"), "haita:q:" + k, "haita:w:" + k, redisholder.Key(k, b.prefix)}
}

// wake wakes the waiter of owner on key, or every waiter of key for owner
// "".
func (b *backend) wake(key, owner string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for o, w := range b.waiters {
		if w.key == key && (owner == "" || owner == o) {
			select {
			case w.c <- struct{}{}:
			default:
			}
		}
	}
}

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// reply is one instance's answer.
type reply struct {
	n   int64
	err error
}

// fanOut runs f on every instance in parallel (the last one on the calling
// goroutine) and returns the replies in the order of b.clients.
func (b *backend) fanOut(idx []int, f func(c redis.Scripter) (int64, error)) []reply {
	out := make([]reply, len(idx))
	var wg sync.WaitGroup
	for j, i := range idx[:len(idx)-1] {
		wg.Go(func() { out[j].n, out[j].err = f(b.clients[i]) })
	}
	last := len(idx) - 1
	out[last].n, out[last].err = f(b.clients[idx[last]])
	wg.Wait()
	return out
}

func (b *backend) all() []int {
	idx := make([]int, len(b.clients))
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// drift is the clock-drift allowance of the Redlock algorithm: 1% of the
// TTL plus 2ms.
func drift(ttl time.Duration) time.Duration { return ttl/100 + 2*time.Millisecond }

// Try takes the key on all instances at once. It succeeds when a majority
// granted it within the validity time, after writing the token — the
// greatest of their counters — back to those behind it. Otherwise it
// releases the key everywhere and reports why: a *lock.HeldError when the
// key is held; an error matching lock.ErrLost when the validity time had
// passed by the time the answers were in (whatever the instances granted
// was worthless, and is given back); for a waiting request whose round
// failed only because instances answered after the instance timeout, a
// *lock.HeldError that has it try again shortly; otherwise a *QuorumError
// naming the failures.
func (b *backend) Try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	g, err := b.try(ctx, req)
	if err == nil && b.waiters != nil {
		b.mu.Lock()
		if w := b.waiters[req.Owner.String()]; w != nil {
			w.took = true
		}
		delete(b.arrivals, req.Owner.String())
		b.mu.Unlock()
	}
	return g, err
}

// arrival returns the clock of owner's first waiting attempt, or start's
// if this is the first, and notes that owner attempts at start.
func (b *backend) arrival(owner string, start time.Time) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	a, ok := b.arrivals[owner]
	if !ok {
		if len(b.arrivals) >= b.sweepAt {
			for o, a := range b.arrivals {
				if start.Sub(a.used) > b.place {
					delete(b.arrivals, o)
				}
			}
			b.sweepAt = 2*len(b.arrivals) + 64
		}
		a.at = strconv.FormatInt(start.UnixMicro(), 10)
	}
	a.used = start
	b.arrivals[owner] = a
	return a.at
}

// forget drops owner's arrival: it no longer waits.
func (b *backend) forget(owner string) {
	if b.arrivals != nil {
		b.mu.Lock()
		delete(b.arrivals, owner)
		b.mu.Unlock()
	}
}

func (b *backend) try(ctx context.Context, req lock.Request) (lock.Grant, error) {
	start := time.Now()
	keys, owner, ttl, ch := b.keys(req.Key), req.Owner.String(), ms(req.TTL), channel(b.prefix+req.Key)
	queue := req.Wait && b.hubs != nil
	waiting := "0"
	if queue {
		waiting = "1"
	}
	arrival := "0"
	if queue {
		arrival = b.arrival(owner, start)
	}
	var mu sync.Mutex
	holders := make(map[string]int) // instances held, by holder
	replies := b.fanOut(b.all(), func(c redis.Scripter) (int64, error) {
		actx, cancel := context.WithTimeout(ctx, b.instanceTimeout(req.TTL))
		defer cancel()
		res, err := acquireScript.Run(actx, c, keys, owner, ttl, waiting, ms(b.place), arrival, req.Holder, ch).Slice()
		if err != nil {
			return 0, err
		}
		n, ok := res[0].(int64)
		if !ok {
			return 0, fmt.Errorf("redlock: acquire script answered %v", res)
		}
		if len(res) == 2 && n != -3 {
			h, _ := res[1].(string)
			mu.Lock()
			holders[h]++
			mu.Unlock()
		}
		return n, nil
	})
	var granted, gated []int
	var token int64
	var pttls []time.Duration
	var errs []error
	for i, r := range replies {
		switch {
		case r.err != nil:
			errs = append(errs, fmt.Errorf("instance %d: %w", i, r.err))
		case r.n > 0:
			granted = append(granted, i)
			token = max(token, r.n)
		case r.n == -3:
			gated = append(gated, i) // free, but an earlier waiter's turn
		case r.n == -1:
			pttls = append(pttls, -1)
		default:
			pttls = append(pttls, time.Duration(-2-r.n)*time.Millisecond)
		}
	}
	why := ""
	if len(granted) >= b.quorum {
		// Write the token back to the quorum members whose counter is
		// behind, so that any later majority meets one that remembers it.
		var behind []int
		for _, i := range granted {
			if replies[i].n < token {
				behind = append(behind, i)
			}
		}
		ok := len(granted) - len(behind)
		if len(behind) > 0 {
			for j, r := range b.fanOut(behind, func(c redis.Scripter) (int64, error) {
				actx, cancel := context.WithTimeout(ctx, b.instanceTimeout(req.TTL))
				defer cancel()
				return raiseScript.Run(actx, c, keys[1:2], token).Int64()
			}) {
				if r.err == nil && r.n >= token {
					ok++
				} else if r.err != nil {
					errs = append(errs, fmt.Errorf("instance %d: write-back: %w", behind[j], r.err))
				}
			}
		}
		validity := req.TTL - time.Since(start)
		switch {
		case ok < b.quorum:
			why = fmt.Sprintf("the token was written back to %d instances, fewer than the quorum of %d", ok, b.quorum)
		case validity <= drift(req.TTL):
			why = fmt.Sprintf("the quorum took %v of the TTL %v", time.Since(start).Round(time.Millisecond), req.TTL)
		default:
			if len(gated) > 0 {
				// This attempt is queued where it was refused: leave
				// (without a notification: it was not first there).
				b.dequeue(ctx, gated, keys, owner, "")
			}
			return lock.Grant{Token: lock.Token(token), Validity: validity}, nil
		}
	}
	took := time.Since(start)
	if len(granted) > 0 || len(errs) > 0 {
		// Quietly, and keeping its place: waking another waiter for the
		// instances this attempt took would only start another round of
		// split votes.
		b.releaseQuiet(req, queue)
	}
	if why == "" && len(granted)+len(errs) < b.quorum {
		// Held on so many instances that answering ones could not change it.
		free := b.freeAt(pttls, len(granted)+len(errs))
		won := false
		for _, n := range holders {
			won = won || n >= b.quorum
		}
		if len(granted) > 0 && !won && b.hubs != nil {
			// A split vote that nobody won, and the instances given back
			// without a notification: try again in a moment, at a random
			// one, so that the next attempts do not collide.
			free = time.Now().Add(time.Millisecond + rand.N(2*time.Millisecond))
		}
		return lock.Grant{}, &lock.HeldError{Key: req.Key, ExpiresAt: free}
	}
	if took >= req.TTL-drift(req.TTL) {
		// Granted or not, it came too late to be valid: not an unknown
		// outcome, a lost grant, given back above.
		return lock.Grant{}, fmt.Errorf("redlock: acquire %q: the answers took %v of the TTL %v: %w", req.Key, took.Round(time.Millisecond), req.TTL, lock.ErrLost)
	}
	if req.Wait && ctx.Err() == nil && slowOnly(errs) {
		// A waiting acquire whose round failed only because instances
		// answered after the instance timeout (a loaded host, a slow
		// link) gave back what it took above and tries again after a
		// random delay, as the Redlock algorithm does after a failed
		// round; its wait ends with its context or wait limit. Refused
		// connections and other errors still end it with a QuorumError.
		d := b.instanceTimeout(req.TTL)
		return lock.Grant{}, &lock.HeldError{Key: req.Key, ExpiresAt: time.Now().Add(d/2 + rand.N(d/2+1))}
	}
	if why == "" {
		why = fmt.Sprintf("%d of %d instances granted, %d hold it for another owner, %d failed", len(granted), len(b.clients), len(pttls), len(errs))
	}
	return lock.Grant{}, &QuorumError{Op: "acquire", Key: req.Key, Reason: why, Errs: errs}
}

// slowOnly reports whether errs is not empty and holds only instance
// timeouts: the instances were slow, not unreachable.
func slowOnly(errs []error) bool {
	for _, err := range errs {
		var ne net.Error
		if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
			return false
		}
	}
	return len(errs) > 0
}

// freeAt estimates when enough holders' leases end for a quorum: the
// moment the (quorum-free)-th shortest remaining lease ends.
func (b *backend) freeAt(pttls []time.Duration, free int) time.Time {
	need := b.quorum - free
	if need <= 0 || need > len(pttls) {
		return time.Time{}
	}
	slices.Sort(pttls)
	d := pttls[need-1]
	if pttls[0] < 0 || d < 0 {
		return time.Time{} // some hold it without expiry
	}
	return time.Now().Add(d)
}

// releaseAll releases req on every instance with a fresh context: it runs
// when an acquire failed, perhaps because the caller's context ended.
func (b *backend) releaseAll(req lock.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.release(ctx, req, channel(b.prefix+req.Key), false)
}

// releaseQuiet is releaseAll without waking a waiter, and keeping req's
// place in the queues if keep.
func (b *backend) releaseQuiet(req lock.Request, keep bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = b.release(ctx, req, "", keep)
}

// release releases req on every instance, then wakes the next waiter with a
// message on ch ("": not). Unless keep, req leaves the queues.
func (b *backend) release(ctx context.Context, req lock.Request, ch string, keep bool) []reply {
	keys, owner := b.keys(req.Key), req.Owner.String()
	k := "0"
	if keep {
		k = "1"
	}
	return b.fanOut(b.all(), func(c redis.Scripter) (int64, error) {
		return releaseScript.Run(ctx, c, keys, owner, uint64(req.Token), ch, k).Int64()
	})
}

// Release deletes the key on every instance that req's owner holds it on,
// and writes the token back to every instance's counter. It returns
// lock.ErrNotHeld when a majority answered that the owner did not hold the
// key there (a lease that kept only a minority, after its key expired on
// the others and another owner took them, was lost, even though the
// minority's keys are deleted), otherwise nil when one instance at least
// released it.
func (b *backend) Release(ctx context.Context, req lock.Request) error {
	b.forget(req.Owner.String())
	var released, notHeld int
	var errs []error
	for i, r := range b.release(ctx, req, channel(b.prefix+req.Key), false) {
		switch {
		case r.err != nil:
			errs = append(errs, fmt.Errorf("instance %d: %w", i, r.err))
		case r.n == 1:
			released++
		default:
			notHeld++
		}
	}
	switch {
	case notHeld >= b.quorum:
		return lock.ErrNotHeld
	case released > 0:
		return nil
	}
	return &QuorumError{Op: "release", Key: req.Key, Reason: fmt.Sprintf("%d instances answered, fewer than the quorum of %d", notHeld, b.quorum), Errs: errs}
}

// Refresh extends the lease on every instance the owner holds it on; it
// succeeds when a majority extended it.
func (b *backend) Refresh(ctx context.Context, req lock.Request) error {
	keys, owner, ttl := b.keys(req.Key), req.Owner.String(), ms(req.TTL)
	keys = []string{keys[0], keys[4]} // the key and its holder record
	var extended, notHeld int
	var errs []error
	for i, r := range b.fanOut(b.all(), func(c redis.Scripter) (int64, error) {
		return refreshScript.Run(ctx, c, keys, owner, ttl).Int64()
	}) {
		switch {
		case r.err != nil:
			errs = append(errs, fmt.Errorf("instance %d: %w", i, r.err))
		case r.n == 1:
			extended++
		default:
			notHeld++
		}
	}
	switch {
	case extended >= b.quorum:
		return nil
	case notHeld > len(b.clients)-b.quorum:
		return lock.ErrNotHeld
	}
	return &QuorumError{Op: "refresh", Key: req.Key, Reason: fmt.Sprintf("%d instances extended it, fewer than the quorum of %d", extended, b.quorum), Errs: errs}
}

// QuorumError reports an operation that did not reach a majority of the
// instances, and why. A Locker wraps it in a *lock.IndeterminateError (it
// matches lock.ErrIndeterminate); errors.As finds it there.
type QuorumError struct {
	Op     string // "acquire", "refresh", "release" or "holder"
	Key    string
	Reason string
	Errs   []error // the instances' errors, if any
}

func (e *QuorumError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redlock: %s %q: no quorum: %s", e.Op, e.Key, e.Reason)
	for _, err := range e.Errs {
		fmt.Fprintf(&b, "; %v", err)
	}
	return b.String()
}

// Unwrap returns the instances' errors.
func (e *QuorumError) Unwrap() []error { return e.Errs }

// notifier is a backend whose clients can subscribe: waiters queue on
// every instance, and a release publishes the name of the first, which
// alone wakes.
type notifier struct{ *backend }

var _ lock.Notifier = notifier{}

// Subscribe implements lock.Notifier: it subscribes to the key's channel
// on every instance (sharing each instance's connection with the Locker's
// other waiters). It needs the confirmation of len(clients)-quorum+1
// instances, enough to meet every majority a release can have released on.
func (n notifier) Subscribe(ctx context.Context, req lock.Request) (lock.Subscription, error) {
	ch := channel(n.prefix + req.Key)
	s := &subscription{b: n.backend, req: req, ch: ch, w: &waiter{key: n.prefix + req.Key, c: make(chan struct{}, 1)}}
	n.mu.Lock()
	n.waiters[req.Owner.String()] = s.w
	n.mu.Unlock()
	errs := make([]error, len(n.hubs))
	var wg sync.WaitGroup
	for i, h := range n.hubs {
		wg.Go(func() { errs[i] = h.subscribe(ctx, ch, s.w.key) })
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			s.hubs = append(s.hubs, n.hubs[i])
		}
	}
	if need := len(n.hubs) - n.quorum + 1; len(s.hubs) < need {
		s.Close()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("redlock: subscribed on %d instances, fewer than %d: %w", len(s.hubs), need, errors.Join(errs...))
	}
	return s, nil
}

// subscription is a waiter plus its hold on the key's channel on each
// instance that confirmed it.
type subscription struct {
	b    *backend
	req  lock.Request
	ch   string
	w    *waiter
	hubs []*hub
}

func (s *subscription) C() <-chan struct{} { return s.w.c }

// Close lets go of the channel and, unless the waiter got the key, takes
// it out of the queues, so that its place does not hold up the others.
func (s *subscription) Close() {
	s.b.mu.Lock()
	delete(s.b.waiters, s.req.Owner.String())
	delete(s.b.arrivals, s.req.Owner.String())
	took := s.w.took
	s.b.mu.Unlock()
	for _, h := range s.hubs {
		h.unref(s.ch)
	}
	if !took {
		// Leaving when it is its turn (a release named it just before
		// its wait ended), it passes the turn on to the next waiter.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.b.dequeue(ctx, s.b.all(), s.b.keys(s.req.Key), s.req.Owner.String(), s.ch)
	}
}

// dequeue takes owner out of the queues of keys (from backend.keys) on the
// instances idx. Where owner was the first live waiter and the key is free,
// the next one is published on ch, unless ch is "".
func (b *backend) dequeue(ctx context.Context, idx []int, keys []string, owner, ch string) {
	keys = []string{keys[2], keys[3], keys[0]}
	b.fanOut(idx, func(c redis.Scripter) (int64, error) {
		return dequeueScript.Run(ctx, c, keys, owner, ch).Int64()
	})
}
