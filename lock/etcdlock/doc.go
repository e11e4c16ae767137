// Package etcdlock implements [lock.Locker] on etcd, the Raft-replicated
// key-value store: a lock survives the loss of a minority of members.
//
// # Keys, leases and tokens
//
// Every holder and every waiter of lock key k owns one etcd key,
// prefix + k + "\x00" + owner (the prefix is [DefaultPrefix] unless
// [WithPrefix] sets another), created only if absent (a transaction on its
// create revision) and bound to an etcd lease of its own. The queue of k is
// the set of those keys ordered by create revision: the first is the holder.
// The create revision is the fencing token; holders are granted in queue
// order, so tokens strictly increase. NUL separates the lock key from the
// owner because NUL cannot occur in a lock key, so the queue of "a" never
// contains the keys of "a/b".
//
// Every lease gets an etcd lease of its own rather than sharing one session
// lease per client: two leases of one client are then different keys with
// different lifetimes and always exclude each other (two
// concurrency.Mutex on one prefix from one Session do not: they write the
// same key), and refreshing or losing one never touches another. The cost,
// a Raft round to grant each lease, is kept off the acquire path: Release
// deletes the key (one Raft round) and keeps its lease, now bound to
// nothing, as a spare for a later acquire while the lease is younger than a
// quarter TTL (up to eight spares per Locker; others are revoked). An
// acquire takes the freshest spare and grants a new lease only when none is
// fresh. So an acquire and release cost two Raft rounds, as for
// concurrency.Mutex. Spares are revoked when found stale and when the
// Locker closes.
//
// # Waiting
//
// A waiter watches only its predecessor (the key just ahead of it in the
// queue), not the whole prefix, so a release wakes exactly one waiter. Its
// watch starts at the current revision, which etcd serves from its "synced"
// watcher group as events happen; a watch that starts at a past revision
// lands in the "unsynced" group, which etcd serves from a loop every 100ms —
// the delay that makes concurrency.Mutex hand a hot key over only about
// ten times a second. Even a watch at the current revision lands there
// when a write commits while etcd registers it (the server fixes the start
// revision before it takes the store's lock), so on a busy key about one
// watch in a hundred sees its event up to 100ms late. A delete before the
// watch began is caught by reading
// the predecessor again once the watch is in place. A waiter that finds its
// predecessor was the only key ahead of it confirms with one read-only
// transaction that its own key still exists and is first. A waiter gives its place
// up (revokes its lease) when its context ends or the wait limit passes. Waiting leases are kept
// alive with KeepAliveOnce every TTL/3.
//
// A first attempt (TryAcquire, and Acquire before it queues) creates its key
// only if the queue is empty — one transaction comparing the create revision
// of the whole prefix — so it never jumps the queue, never leaves a key
// behind, and on failure returns a *lock.HeldError naming the head of the
// queue. Queueing is a second transaction that creates the key and, reading
// its own write, returns the predecessor; when the predecessor's watch
// starts at that same revision no further read is needed.
//
// # Expiry
//
// etcd lease TTLs are whole seconds: lock.Options.TTL must be a whole number of
// seconds, at least 1s; the server raises it to its own minimum (2s with the
// default election timeout). Refresh is one KeepAliveOnce; auto-refresh is
// the lock core's (lock.Options.AutoRefresh) rather than etcd's KeepAlive
// stream, so that a failed refresh ends the lease on the same local
// deadline as every other backend. A lease's Done channel closes on the
// client's monotonic clock before the etcd lease can expire.
package etcdlock
