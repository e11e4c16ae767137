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
