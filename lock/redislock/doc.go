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
// Waiters queue in Redis, across processes, in the order they came: a
// waiting Acquire that finds the key held adds its owner to the key's
// queue in the same script (a sorted set and a hash beside the key, in its
// hash slot, holding each waiter's place, TTL and deadline). A release by a
// haita Locker hands the key to the first live waiter inside the release
// script — SET key waiter PX its-TTL, a new fencing token — and publishes
// "owner token" on the channel "haita:released:" + the Redis key. Only that
// waiter acts on it: the others stay asleep, and a waiter of the releasing
// Locker learns of it from the script's answer without waiting for the
// message. A key nobody queues for is deleted and an empty message is
// published on the same channel for readers of the key's holder
// ([lock.Locker.WatchHolder]); waiters ignore it, and a channel nobody
// subscribes to costs Redis a lookup. A TryAcquire does not barge ahead of
// the queue.
//
// Within one Locker, waiters of a key queue locally ([lock.WaitQueue]) and
// only the first of them queues in Redis; a release by the same Locker
// hands the key straight to that first local waiter inside the release
// script — one round trip, and no other script — up to 8 times in a row
// ([lock.MaxHandoffs]); then the key goes to Redis's queue, so that
// waiters of other processes get their turn.
//
// A waiter keeps its place by renewing its deadline (a third of its TTL);
// a waiter whose process died is skipped once its deadline passes, and a
// key handed to it expires after its TTL. Either way the key moves on
// within about one waiter TTL.
//
// Clients other than haita know nothing of the queue: their SET NX may
// take a free key before the first waiter does, and their release (DEL)
// or a key's expiry publishes nothing on haita's channel. Waiters learn of
// those from keyspace notifications, when the server has them enabled —
//
//	CONFIG SET notify-keyspace-events Kgx
//
// (K: keyspace channels; g: DEL and the like; x: expiries) — within about
// a millisecond. Without them an expiry is still found on time (a waiter
// asks again when the holder's PTTL runs out), but a foreign DEL is found
// only by the fallback poll, lock.Options.PollInterval (1s by default):
// up to a second of an idle key. Haita's own handoffs need no
// notifications.
//
// A Locker keeps one pub/sub connection for all its waiters: the first
// waiter of a key subscribes to the key's two channels (and waits until
// Redis confirmed them), and they stay subscribed for a second after the
// last waiter left, so that a contender that waits again and again does
// not pay for a SUBSCRIBE each time.
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
// lets [lock.Locker.Holder] say who holds a key. Every grant writes it: an
// acquire, a handoff within a Locker, and a release that hands the key to
// the first waiter in Redis's queue (each queued waiter's holder name is
// kept with its place). A waiter handed the key by another process counts
// its lease from the arrival of the grant message, which left Redis after
// the key's new TTL started: lock.Options.Drift must cover that delivery
// delay (it does by default, TTL/100 + 2ms, unless pub/sub stalls).
package redislock
