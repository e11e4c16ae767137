// Package racelab is the race lab behind "haita race": every race of the
// techniques S1–S19 (docs/techniques.md in the repository) reproduced with
// a broken variant — the naive code the techniques warn about — and one or
// more fixed variants built on haita's packages, run by many workers
// (goroutines, and real OS processes where the technique is about
// processes), with the invariant checked afterwards.
//
// Each [Scenario] lists its [Case]s (one variant on one engine). [Run] runs
// the selected cases and returns one [Result] per case: the number of
// violations of the scenario's invariant (lost updates, duplicates, oversells,
// deadlocks, lost edits, double runs, stale writes), throughput, retries and
// the p50/p99 wait of an operation.
//
// The race windows are widened on purpose: a broken variant sleeps for
// Config.Window between its read and its write (and the fixed variants do the
// same work inside their protection), so that a broken variant violates its
// invariant on the first run instead of once in a thousand. Every Result
// carries the window it ran with.
//
// Worker processes are started through Config.Worker, which re-executes the
// current binary with a hidden subcommand; the process entry point is
// [RunWorker]. Nothing in the package is global: a Run owns its temporary
// directory, databases and connections and removes them before it returns.
package racelab
