// Package redislock provides locks on one Redis deployment — a single
// server, Sentinel or Cluster, through any redis.UniversalClient — that
// other Redis lock clients understand.
//
// # On the wire
//
// The Redis key is the lock key (after an optional prefix) and holds the
// owner's random value, set with `SET key owner NX PX ttl`; release and
// refresh compare the value before deleting or extending. This is what
// redsync, node-redlock and redis-py do, so a lock taken by any of them
// excludes haita on the same key and the other way round. Every operation
// is one Lua script sent with EVALSHA (falling back to EVAL once when the
// server lost its script cache): one round trip to acquire, one to release.
//
// # Fencing tokens in a Cluster
//
// The acquire script increments a fencing counter in the same call, which
// Redis Cluster allows only for keys of one hash slot. The lock key cannot
// change (it must stay what other clients use), and a name derived from it
// lands in another slot unless the key carries a hash tag. So the counter is
// per slot: its name starts with a hash tag chosen, from a table built once,
// to hash to the lock key's slot, as in "{ab3}:haita:fence". Every key in a
// slot shares that slot's counter, which keeps tokens strictly increasing
// per key (they increase for the whole slot) and bounds the counters at
// 16384 however many keys are used.
//
// # Waiting
//
// A release publishes on the channel "haita:released:" + the Redis key. A
// Locker keeps one pub/sub connection for all its waiters: the first waiter
// of a key subscribes (and Subscribe returns once Redis confirmed it), the
// last one to leave unsubscribes. The waiters of one Locker queue in the
// order they came ([lock.WaitQueue]): only the first asks Redis, and a release by the same
// Locker hands the key straight to it inside the release script — one round
// trip for the handoff, and no barging by a goroutine that releases and
// acquires again. After 8 handoffs in a row a release frees the key and
// publishes, so waiters in other processes get a turn. A TryAcquire on a key
// the same Locker has waiters for reports it held without asking Redis.
// Clients other than haita publish nothing; haita's waiters then wake at the
// holder's expiry or by the fallback poll (lock.Options.PollInterval, 1s).
//
// # Limits
//
// Redis replicates asynchronously: a failover can lose a grant and let a
// second holder in (Capabilities.FailoverSafe is false), and a restarted
// server without an append-only file forgets its fencing counters. Use
// lock/redlock or lock/etcdlock where that matters, and guard writes with
// the fencing token. The key holds the owner value alone; the holder's
// name (Options.Holder) and token are kept beside it in a holder record,
// "{slot}:haita:holder:<key>", which lives exactly as long as the lease and
// lets [lock.Locker.Holder] say who holds a key.
package redislock
