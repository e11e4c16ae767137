// Package singleton runs jobs that must not run twice: on at
// most one node at a time over any lock.Locker, and at most once per
// schedule slot with a durable marker.
//
// # Which guarantee each mode gives
//
//   - [Runner.Run] — no overlap. While fn runs, the job's lease is held and
//     refreshed; no other node sharing the lock backend runs the job at the
//     same time. Nothing stops the job from running again right after,
//     here or elsewhere: a fast job scheduled on three nodes runs three
//     times, one after the other. This is all gocron's own distributed
//     Locker gives.
//   - [Runner.RunSlot] — once per slot. Under the lease the runner claims
//     the marker row (job, slot) in SQL ([SQLMarkers]); a slot recorded
//     "done" or "failed" never runs again, so two schedulers whose clocks
//     differ by seconds do not run the 01:00 job twice. A runner that
//     dies, or loses its lease, before recording the outcome leaves the
//     slot "started"; the next lease holder (after the dead runner's lease
//     expired, or at once for file locks, which the OS frees) runs it again
//     and counts the attempt. So a completed slot runs at most once, and a
//     crashed run is retried: effects of a run that crashed after acting
//     but before recording may happen twice — make fn idempotent or fence
//     its writes with the lease token.
//
// Both modes cancel fn's context when the lease is lost (its cause is
// lock.ErrLost); fn must stop then. Exclusion is only as strong as the
// backend's (see lock.Capabilities): memlock excludes goroutines of one
// process, filelock processes of one machine, the network backends every
// node sharing the server. A lost lease is noticed on the local monotonic
// clock before the server expires it, but a paused process can still act
// late: that is what the markers' fencing check and the lease's token are
// for.
//
// When the lease is held elsewhere, [Skip] mode returns a *[RunningError]
// naming the holder (where the backend stores holder names) and [Wait] mode
// waits; a waiting runner that then finds its slot completed returns a
// *[DoneError].
//
// # Schedulers
//
// [Runner.GocronLocker] plugs into github.com/go-co-op/gocron/v2
// (WithDistributedLocker) and adds once-per-slot with GocronOptions.Every;
// [Runner.CronWrapper] is a github.com/robfig/cron/v3 JobWrapper. [Slot]
// names a slot by rounding a time to the schedule's period.
//
// # Concurrency
//
// A [Runner] and [SQLMarkers] are safe for concurrent use by multiple
// goroutines and processes. A Runner starts one goroutine per running job
// (the lease refresh) and stops it before Run returns.
package singleton
