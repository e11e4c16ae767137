// Package redlock provides locks over N independent Redis masters with the
// Redlock algorithm: a lease needs a majority (N/2+1) of the instances, so
// the lock keeps working with a minority of them down or slow and refuses
// to grant with a majority down.
//
// # The algorithm
//
// Acquire sends `SET key owner NX PX ttl` (in a script that also increments
// the instance's fencing counter) to all N instances in parallel. It
// succeeds when a majority granted the key and time is left: the lease's
// validity is the TTL minus the time the quorum took, and the Locker's local
// deadline subtracts the drift allowance (1% of the TTL plus 2ms) from
// that. Otherwise the key is released on every instance and the error says
// why: a *[lock.HeldError] when others hold it, a [*QuorumError] (inside a
// [lock.ErrIndeterminate]) when instances failed. Release and refresh fan
// out in parallel as well; refresh needs a majority. The keys are named and
// valued as redsync names them, so the two exclude each other.
//
// # Waiting
//
// With clients that can subscribe (*redis.Client), haita's waiters queue
// on every instance: a waiting Acquire that finds the key held joins a
// sorted set beside the key ("haita:q:" + key, deadlines in "haita:w:" +
// key) in the same script, ordered by its first attempt's clock: every
// attempt of a waiting Acquire queues at that clock, so that the instances
// agree on who is first even where it queued later. A free key is the
// first live waiter's turn: other haita attempts on that instance are
// refused, so that a contender that releases and at once acquires again
// cannot barge ahead, and each refusal publishes the first waiter's owner,
// so that a waiter whose turn came without a message to it (a release by a
// client that does not queue, a message lost) does not sleep until its
// poll. A release deletes the key and, when waiters queue, publishes the
// first one's owner on "haita:released:" + key; only that waiter wakes,
// and takes a majority in one round. An uncontended release publishes
// nothing. A waiter keeps its place until its lease is released, also
// where it was granted in a vote that split and gave the instances back,
// by attempting at least every poll (lock.Options.PollInterval, 1s); it
// loses it three polls after its last attempt, so a waiter process that
// died holds the queue up for about three polls. A waiter that stops
// waiting when it is its turn passes the turn on with a message to the
// next. Each Locker keeps one pub/sub connection per instance for all its
// waiters. If a vote splits without a winner (a release that reached only
// some instances yet, a place lapsed on one instance), the attempts give
// their instances back without a message and try again within 1–3ms, at
// random.
//
// Clients other than haita (redsync) know nothing of the queue and publish
// nothing: their SET NX can take a free key ahead of the queue, and haita's
// waiters find their releases by the fallback poll, or at the holder's
// expiry. With clients that cannot subscribe, waiting polls every 50ms.
//
// # Fencing across a quorum
//
// Every instance keeps fencing counters (one per hash slot, so they stay
// few). A grant's token is the greatest of the quorum's counters after the
// increment. Before the lease is handed out the token is written back to the
// quorum members whose counter is behind, so that a majority then remembers
// a counter of at least the token; any later majority overlaps it, and its
// token is greater. When the counters agree — the usual case with every
// instance up — there is nothing to write back and an acquire is one round
// trip. Release writes the token back again on every instance.
//
// # Persistence
//
// Both the lock and its tokens rely on instances remembering what they
// granted. An instance that restarts empty can let a second holder in while
// the first lease is valid, and can hand out a token that is not greater than
// one already used, whenever it was the only overlap between two majorities.
// Run the instances with `appendonly yes` and `appendfsync always` (or
// accept that risk with `everysec`), or keep a restarted instance out of
// service for longer than the longest TTL — which protects the locks, but
// not the tokens: counters need the append-only file.
//
// Redlock is not a consensus protocol: it assumes bounded clock drift and
// bounded pauses. For leases that must survive those, use lock/etcdlock;
// either way, guard writes with the fencing token.
//
// # No semaphores or reader-writer locks
//
// Redlock offers the mutex only (Capabilities.Semaphore and RWLock are
// false). A mutex over a quorum is safe because any two majorities share an
// instance, and that instance refuses the second holder. A semaphore has no
// such witness: with 3 instances and 2 permits, holders A and B can win
// majorities {1,2} and {2,3}, and C then finds room on {1,3} — instance 1
// has only A, instance 3 only B — so three hold two permits, although every
// instance kept its own count. Per-instance counts do not add up across
// overlapping majorities; bounding the holders would need every grant to
// see every other grant, which is a consensus protocol, not Redlock. The
// same argument rules out shared/exclusive leases, since a writer's
// exclusion is a count of readers. For semaphores across failures use
// lock/etcdlock's Raft-replicated store, or a single Redis with
// lock/redislock and accept its failover caveat.
package redlock
