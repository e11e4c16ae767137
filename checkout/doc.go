// Package checkout gives a user an edit lease on a resource that spans
// requests: pessimistic control for edits that take minutes.
//
// A user checks a resource out with [Manager.Acquire] and gets a
// [Checkout] carrying a secret Token; everyone else gets a *[HeldError]
// saying who holds it, since when and until when. The holder's page sends
// [Manager.Heartbeat]s; [Manager.Release] gives it back; [Manager.ReleaseOwner]
// ends everything one user holds (logout, session end). A checkout ends by
// itself after Options.Idle without a heartbeat, and after Options.MaxAge
// whatever happens, so the user who leaves for a holiday does not block
// everyone for weeks. An administrator can [Manager.Break] a checkout; the
// break (who, when, why) is stored, and the former holder learns of it as a
// *[BrokenError] on his next Heartbeat or Save.
//
// # Guarantees
//
// With [SQLStore] (PostgreSQL, MySQL/MariaDB, SQLite), every operation is
// one transaction that locks the resource's row, so any number of goroutines
// and processes sharing the database see one consistent holder:
//
//   - At most one live checkout per resource. Of N users racing for a free
//     resource exactly one wins; the others get a *HeldError.
//   - Expiry is judged at each call from the stored times: an expired
//     checkout stops blocking at once, whether or not [Manager.Sweep] ran.
//     Sweep only tidies up.
//   - [Manager.Save] verifies the checkout (row-locked, live, token matches,
//     not broken) and runs the caller's writes in the same transaction: a
//     save after expiry or break is refused and never applied, and a break
//     or takeover waits for a running save to commit.
//   - Break and expiry records are rows in the database: the former holder
//     learns of them from any process, until Sweep forgets records older
//     than Options.Retention.
//
// Times come from Options.Now on each machine and are compared with times
// other machines stored: keep the clocks synchronised (NTP). A skew of s
// seconds moves an expiry by s seconds; it never lets two users hold a
// resource at once, because the decision is made under the row lock.
//
// [LockStore] serves the same API over any lock.Locker, with limits its doc
// lists (no Save transaction; details and records only in the acquiring
// process; use the Fence token to guard writes).
//
// # Concurrency
//
// A [Manager] and the stores are safe for concurrent use by multiple
// goroutines. Nothing runs in the background: there is no goroutine to stop.
//
// # HTTP
//
// A *[HeldError] has the fields of httpcc.LockedError (Holder, Since, Until):
// a handler answers 423 Locked with httpcc.WriteError(w,
// &httpcc.LockedError{Holder: he.Holder, Since: he.Since, Until: he.Until}).
package checkout
