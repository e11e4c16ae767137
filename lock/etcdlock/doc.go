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
// A waiter creates its key and, in the same transaction, reads the keys
// ahead of it (those created before it); it is first, and holds the lock,
// once every one of them is deleted. It learns of the deletes from a watch
// that its Locker keeps on the key's queue: one watch per Locker and lock
// key, opened by the first waiter of that key, shared by all its waiters in
// the Locker and kept open while the key has waiters and for ten seconds
// after the last leaves. The waiter joins that watch before it creates its
// key, so every delete after its read reaches it, and it crosses the
// deleted keys off without another request: a release is one Raft write
// and one event, and no waiter's key costs a read when its turn comes.
//
// The watch is kept open rather than opened per wait because of etcd's
// "unsynced" watcher group, which etcd serves from a loop every 100ms: a
// watch that starts at a past revision lands there, and so does a watch at
// the current revision when a write commits while etcd registers it (the
// server fixes the start revision before it takes the store's lock). On a
// hot key writes commit all the time, so a watch opened at the moment of
// waiting saw its event up to 100ms late about once in a hundred waits —
// and concurrency.Mutex, which watches from a past revision, pays those
// 100ms on every contended wait. A watch opened once is in the synced
// group for good and delivers each delete as it commits. Keys nobody waits
// for have no watch, so their releases cost no events.
//
// A watch that breaks (a compaction, a member that lost its leader: the
// watch requires one) is opened again, and each of its waiters reads its
// queue afresh once the new watch is in effect; the waiters also read it
// every TTL/3, when they keep their own lease alive (KeepAliveOnce), as
// insurance against a watch gone silent. A waiter whose own key is deleted
// (its lease expired) fails with [lock.ErrLost]; one whose context ends or
// whose wait limit passes gives its place up (deletes its key).
//
// A first attempt (TryAcquire, and Acquire before it queues) creates its key
// only if the queue is empty — one transaction comparing the create revision
// of the whole prefix — so it never jumps the queue, never leaves a key
// behind, and on failure returns a *lock.HeldError naming the head of the
// queue. etcd sends a transaction with a write through Raft even when its
// comparison fails, so on a key that had waiters in the Locker lately (its
// watch is open) the attempt first reads the queue and reports the key held
// without writing when it is not empty.
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
