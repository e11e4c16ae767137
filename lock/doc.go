// Package lock defines the lock contract every haita backend meets: a
// [Locker] hands out [Lease] values for string keys, each carrying a fencing
// [Token] that is strictly greater for every later holder of the same key.
//
// The backends live below this package, one per engine:
//
//	lock/memlock    in-process keyed locks (one process)
//	lock/filelock   flock(2) files that exclude goroutines and processes on one machine
//	lock/redislock  one Redis (or Cluster/Sentinel)
//	lock/redlock    a quorum over N independent Redis masters
//	lock/pglock     PostgreSQL lease rows
//	lock/mysqllock  MySQL and MariaDB lease rows
//	lock/etcdlock   etcd leases (Raft-replicated)
//
// Each backend reports what it offers through [Capabilities]; the shared
// conformance suite in lock/locktest runs every test that applies.
//
// # Constructing a Locker
//
// Every backend is built the same way, with the engine's handle, the
// [Options] every backend shares, and the few settings of its own as
// functional options, and returns its own *Locker that implements [Locker]:
//
//	redislock.New(rdb, lock.Options{TTL: 10 * time.Second, AutoRefresh: true})
//	pglock.New(pool, lock.Options{}, pglock.WithTable("app.locks"))
//	memlock.New(lock.Options{})
//	filelock.New(dir, lock.Options{})
//
// # Semaphores and reader-writer locks
//
// A [Semaphore] admits up to a limit of holders per key and an [RWLocker]
// many readers or one writer; both hand out the same [Lease] values, with
// TTL, refresh, auto-refresh, Done, owner-only release and fencing tokens
// from one counter per key. Backends that offer them (Capabilities.Semaphore
// and RWLock) have constructors of the same shape:
//
//	redislock.NewSemaphore(rdb, lock.Options{}, 3)
//	pglock.NewRWLocker(pool, lock.Options{})
//
// On the backend side they are one request shape, a [Share] of a key's
// permits (see semaphore.go); the Locker core does the rest as for a mutex.
//
// # Before a write
//
// A lease's Done channel and Err are updated by a timer at the local
// deadline, which fires late when the process was paused. Right before a
// write the lease guards, call [Lease.Check]: it reads the clock. Guard the
// write itself with the [Token].
//
// # Building a backend
//
// The backend side of the package is in backend.go: a backend implements
// the small [Backend] interface (one attempt, refresh, release, and
// optionally [Notifier] or [Queuer]), whose docs state every rule it must
// follow, and [New] builds the [Locker] on it. The machinery every user
// relies on lives here, once: key and option validation, waiting by
// notification with a jittered poll as fallback, wait limits, the local
// expiry deadline, auto-refresh, cleanup of indeterminate outcomes,
// [Metrics], and the count of waiters ([Locker.Waiting]) that tests
// synchronise on. Backends with notification keep their local waiters in a
// [WaitQueue], which serves them in order and hands a key released by the
// same Locker straight to the next of them. Backends whose engine finishes a
// request the client gave up on run their attempts through [Detached], which
// releases what such an attempt took.
//
// # Reading a key's holder
//
// [Locker.Holder] reads who holds a key now — the holder's name
// (Options.Holder), its token and the engine's expiry — without taking a
// place in line, through the optional [HolderReader] a backend implements
// (every backend of haita does). Where the backend implements
// [HolderNotifier] (etcd; Redis and PostgreSQL for releases),
// [Locker.WatchHolder] wakes a reader when the holder may have changed. Leader election
// (package election) and inspection tools are built on them.
//
// # Honest limits
//
// A lease is a promise with an end date, not a guarantee that nobody else
// acts. It is NOT safe to assume the lock is held until Release returns: a
// process can pause (garbage collection, a stopped VM, a slow network) past
// the lease's expiry while another process takes the key. haita reports loss
// as early as it can — a lease's Done channel closes on the client's own
// monotonic clock before the server-side expiry (TTL minus the send time of
// the request minus a drift allowance), and when a refresh fails — but a
// holder that is paused cannot react to a channel. Storage that must never see
// a stale writer has to check the fencing token: keep the greatest token that
// wrote, and refuse a write that carries a smaller one (package sqlcc has the
// SQL for it).
//
// # Errors
//
// Every error matches one of the sentinels below with [errors.Is]:
//
//	ErrNotAcquired   the key is held by someone else (*HeldError carries holder and expiry)
//	ErrWaitLimit     Acquire waited Options.WaitLimit without getting the key
//	context.Canceled / context.DeadlineExceeded   the caller's context ended
//	ErrNotHeld       Release or Refresh by a lease that no longer holds its key
//	ErrLost          a lease ended without Release (expired, refresh failed, taken over);
//	                 from Acquire: the grant came after its own local deadline and was given
//	                 back, or the waiter's own engine state (an etcd lease) ended while it waited
//	ErrReleased      a lease's Err after a Release that did not report ErrNotHeld
//	ErrIndeterminate the engine may or may not have applied the request; haita cleaned up
//	                 (it never matches the context errors while the caller's context is alive)
//	ErrInvalidKey    an empty, too long or malformed key (*KeyError says why)
//	ErrInvalidOptions an option out of range, named in the message
//	ErrClosed        the Locker was closed
//	ErrNoHolder      Holder found the key free
//	ErrUnsupported   the backend cannot read holders (or notify their changes)
package lock
