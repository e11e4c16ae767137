// Package filelock provides locks that exclude goroutines and processes on
// one machine alike, built on flock(2) with one lock file per key in a
// directory.
//
// A [Locker] from [New] hands out [lock.Lease] values with fencing tokens.
// Leases have no TTL: when the holding process dies — even by SIGKILL — the
// kernel closes its descriptors and frees its locks, so the next process gets
// the key at once.
//
// # Goroutines and processes
//
// A file lock alone does not exclude threads of one process in every API:
// POSIX record locks (fcntl, Java's FileChannel.lock) belong to the process,
// so a second lock request from the same process simply succeeds. flock(2)
// locks belong to the open file description, so two descriptors opened by
// one process do exclude each other — but a waiting goroutine would then need
// its own descriptor and a blocked thread. filelock therefore keeps an
// in-process guard per key: the goroutines of one Locker queue in arrival
// order and are woken by channels; only the goroutine at the head of the
// queue touches the file. Two Lockers on the same directory in one process
// still exclude each other, through flock.
//
// Across processes there is no notification: the process waiting for a key
// retries a non-blocking flock with jittered, doubling pauses (about 1ms up
// to lock.Options.PollInterval, default [DefaultPollInterval]). A blocking flock
// in a goroutine per waiter would be woken at once but cannot be cancelled,
// so a cancelled Acquire would leave a thread blocked in the kernel until the
// key is freed. Hence Capabilities.FIFO and Capabilities.Notify are false:
// both hold only within one process, and between processes the first attempt
// after a release wins.
//
// # Fencing tokens
//
// The token counter lives in the lock file itself, read and rewritten by
// each holder right after flock succeeds. It is not fsynced on every acquire
// (that costs milliseconds on a disk), yet tokens strictly increase even
// across a power loss: a token is an epoch and a counter, and the directory
// keeps an epoch in a file named "epoch" that the first Locker created after
// each boot (detected by the kernel's boot id) raises and fsyncs. A key taken
// for the first time in a boot starts at that epoch. So a power loss may undo
// counter increments, never the epoch, and the next boot starts above every
// token handed out before: two fsyncs per directory per boot. Where no boot
// id can be read (systems other than Linux) every acquire fsyncs instead.
// The format and the argument are in record.go. A lock file whose record is
// damaged makes Acquire fail with an error naming the file rather than hand
// out a token that might repeat.
//
// # Lock files
//
// [FileName] documents how a key becomes a file name: readable for simple
// keys, reversible (so distinct keys never share a file), never leaving the
// directory. Lock files are never deleted, and this package offers no way to
// delete them: unlinking a lock file races with other openers — process A
// opens the file, B (the holder) unlinks it and releases, A locks the
// now-nameless file while C creates a new file under the same name and locks
// that; A and C both hold "the" lock. Deleting the file would also reset its
// fencing counter. A file costs one inode and about 150 bytes; remove the
// directory only when no process can be using it.
//
// Use a local file system. Anyone who can open a lock file can block its key,
// so New creates the directory with mode 0o700 and files with 0o600: the
// lock serves processes of one user (and root). Descriptors are opened
// close-on-exec, so child processes never inherit a lock.
package filelock
