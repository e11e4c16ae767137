// Package testserver starts real servers for tests — redis-server (single and cluster),
// PostgreSQL 15, MariaDB and etcd, from the Debian packages — on loopback, on free ports, in
// temporary directories. Nothing is mocked.
//
// A test binary that uses it calls [Main] from TestMain, which stops the servers shared by the
// binary and then checks for leaked goroutines:
//
//	func TestMain(m *testing.M) { testserver.Main(m) }
//
// # Fast and slow servers
//
// Servers that start in well under a second are started for one test and stopped by its
// t.Cleanup: [Redis], [RedisCluster] and [Etcd]. PostgreSQL and MariaDB take seconds to
// initialise, so [Postgres] and [MariaDB] start one server per test binary, lazily on first use,
// and give every call a fresh database of its own, dropped by the test's cleanup.
// [PostgresServer] starts a dedicated PostgreSQL for tests that stop, kill or restart it; it
// copies a data directory initialised once per binary. [MariaDBServer] does the same for
// MariaDB, initialising a data directory of its own (a few seconds).
//
// # Missing servers
//
// When a server's binary is not installed the test is skipped with a message naming the binary
// and the Debian package that provides it, unless [Required] reports that servers are required
// (HAITA_REQUIRE_SERVERS=1): then the test fails.
//
// # Child processes
//
// Tests that need several OS processes re-execute the test binary. A child must use its
// parent's servers, not start its own, and every server-starting function arranges that: the
// parent exports a description of each server it starts in an environment variable named
// HAITA_TS_ followed by 16 hexadecimal digits (derived from the test's name, the kind of server
// and how many of that kind the test asked for before), and removes it when the test ends. A
// child started with the parent's environment while that test runs, running the same test
// (-test.run=^TestName$), gets the same answers from the same calls: the same addresses, and for
// [Postgres] and [MariaDB] the same database. The child does not own those servers: it never
// stops them or drops their databases, and their Stop, Start, Kill, Pause and Resume methods
// fail its test. [ChildEnv] lists the variables, for a child given an explicit environment.
//
// # Concurrency and cleanup
//
// Every function may be called from parallel tests. The methods of one server handle are safe
// for concurrent use, but like t.Fatal they must be called from the test's goroutine or one of
// its subtests', because they fail the test when the server does not come back.
//
// Servers run in their own process group with a parent-death signal, so they die with the test
// binary even when a panic or a test timeout crashes it before cleanups run. Each server's
// output goes to a log file in its directory; a server that fails to start fails the test with
// the end of that log.
package testserver
