// Package election elects one leader among candidates over any
// [lock.Locker]: memlock, filelock, redislock, redlock, pglock and etcdlock
// alike.
//
// An [Election] is a lock key. [Election.Campaign] waits until this
// candidate holds it and returns its [Leadership]: the term, which is the
// lease's fencing token and so strictly greater for every later leader of
// the election; the value it published (the Locker's Options.Holder, such
// as an address or an instance name); a Done channel and a context that end
// when leadership is lost — on the client's monotonic clock, before the
// engine lets go of the lease, as leases do — and Resign.
//
// [Election.Leader] tells who leads without campaigning, and
// [Election.Observe] reports every change of leader. [Election.Run] is the
// callback style of client-go's leaderelection (on started leading with a
// context, on stopped leading, on new leader) over the same pieces, and
// [Elector] answers gocron v2's Elector interface.
//
// Leadership is a lease, so the Locker should have a TTL (for network
// engines) and Options.AutoRefresh set: then a leader that stops, pauses or
// loses the engine past its TTL learns that its leadership ended (Done is
// closed) before another candidate can lead. Work a leader does in the
// world outside should carry the term as a fencing token (see
// sqlcc.FencedUpdate), since a pause between a check and a write can
// outlast any lease.
package election
