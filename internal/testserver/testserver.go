package testserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const (
	requireEnv    = "HAITA_REQUIRE_SERVERS"
	handoffPrefix = "HAITA_TS_"
	dirPrefix     = "haita-ts-" // directories this package makes in os.TempDir
	ownerFile     = "owner.pid" // in each of them: the pid of the test binary that made it
)

// Required reports whether servers are required: HAITA_REQUIRE_SERVERS=1 in the environment.
// Then a server binary that is not installed fails the test (t.Fatal); otherwise the test is
// skipped (t.Skip) with a message naming the binary and the Debian package that provides it.
func Required() bool { return os.Getenv(requireEnv) == "1" }

// Main runs the tests of a test binary and exits with their status; it does not return. Every
// test package that uses [Postgres], [PostgresServer], [MariaDB] or [MariaDBServer] must call it from TestMain,
// and any test package may:
//
//	func TestMain(m *testing.M) { testserver.Main(m) }
//
// After the tests it stops the servers shared by the binary and removes their directories.
// Then, if the tests passed, it fails the binary when goroutines are still running
// (go.uber.org/goleak). Before the tests it removes directories that test binaries which have
// since died left in os.TempDir.
//
// A test that panics or times out crashes the binary without returning to Main. The servers
// die with it all the same (they run with a parent-death signal), and the next Main removes
// their directories.
func Main(m *testing.M) { MainWith(m) }

// MainWith is [Main] with extra goleak options, for a test package whose dependencies keep
// goroutines known to be harmless (goleak.IgnoreTopFunction and friends).
func MainWith(m *testing.M, opts ...goleak.Option) { os.Exit(run(m, opts)) }

func run(m *testing.M, opts []goleak.Option) (code int) {
	sweepStale()
	binary.mu.Lock()
	binary.inMain = true
	binary.mu.Unlock()
	// Deferred as well as called, so that a panic in TestMain's own goroutine still stops them.
	defer stopShared()

	code = m.Run()
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "testserver: stopping shared servers: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(append(leakOptions(), opts...)...); err != nil {
			fmt.Fprintf(os.Stderr, "testserver: goroutines still running after the tests passed: %v\n", err)
			code = 1
		}
	}
	return code
}

// leakOptions are the goroutines every binary may leave behind. None is needed so far: the
// clients used here (go-redis, pgx, database/sql, the etcd client over grpc) stop their
// goroutines when closed, and goleak retries for a while to let them finish exiting.
func leakOptions() []goleak.Option { return nil }

// ChildEnv returns the HAITA_TS_ variables ("NAME=value") that describe the servers this
// process has exported to child processes, or inherited from its parent. A child started with
// exec.Command and a nil Env inherits them anyway; ChildEnv is for a child given an explicit
// environment.
func ChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if handoffName.MatchString(name) {
			env = append(env, kv)
		}
	}
	return env
}

// binary holds what outlives a single test: the servers shared by the whole test binary, which
// Main stops, and the count of servers each test asked for, which names the variables handed to
// child processes. A server shared by every test has to live somewhere each test can reach;
// this is the package's only mutable package-level state.
var binary struct {
	mu     sync.Mutex
	inMain bool                          // Main is running the tests
	closed bool                          // Main has stopped the shared servers
	calls  map[testing.TB]map[string]int // per test and kind: servers asked for so far
	ports  map[int]bool                  // ports handed out; never handed out twice

	pgTemplate lazy[string]         // an initdb'd directory that PostgreSQL instances copy
	pg         lazy[*pgInstance]    // the instance behind Postgres
	maria      lazy[*mariaInstance] // the instance behind MariaDB
}

var errClosed = errors.New("testserver: Main has already stopped the shared servers")

// stopShared stops the shared servers and removes their directories; it is idempotent.
func stopShared() error {
	binary.mu.Lock()
	if binary.closed {
		binary.mu.Unlock()
		return nil
	}
	binary.closed = true
	binary.mu.Unlock()

	var errs []error
	if m, ok := binary.maria.close(); ok {
		errs = append(errs, m.close())
	}
	if p, ok := binary.pg.close(); ok {
		errs = append(errs, p.close())
	}
	if dir, ok := binary.pgTemplate.close(); ok {
		errs = append(errs, os.RemoveAll(dir))
	}
	return errors.Join(errs...)
}

// needMain fails t unless Main is running the tests: the shared servers are stopped there.
func needMain(t testing.TB, fn string) bool {
	t.Helper()
	binary.mu.Lock()
	in, closed := binary.inMain, binary.closed
	binary.mu.Unlock()
	switch {
	case !in:
		t.Fatalf("testserver: %s needs testserver.Main, which stops the servers shared by the test binary: "+
			"add func TestMain(m *testing.M) { testserver.Main(m) }", fn)
		return false
	case closed:
		t.Fatalf("testserver: %s called after the tests ended: %v", fn, errClosed)
		return false
	}
	return true
}

// lazy is a value made once, on first use, by whoever needs it first.
type lazy[T any] struct {
	mu   sync.Mutex
	done bool
	val  T
	err  error
}

// get returns the value, calling make first if no call has yet. A failure is kept, so that the
// tests after the first one fail at once with the same error instead of waiting for their own.
func (l *lazy[T]) get(make func() (T, error)) (T, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.val, l.err = make()
		l.done = true
	}
	return l.val, l.err
}

// close returns the value if one was made, and makes later calls of get fail with errClosed.
func (l *lazy[T]) close() (T, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v, ok := l.val, l.done && l.err == nil
	var zero T
	l.val, l.done, l.err = zero, true, errClosed
	return v, ok
}

// Handing servers to child processes.

var handoffName = regexp.MustCompile(`^` + handoffPrefix + `[0-9A-F]{16}$`)

// handoff names the environment variable that describes, to child processes, the server of the
// given kind that test t asks for now: its n-th of that kind, counting from 0.
func handoff(t testing.TB, kind string) string {
	binary.mu.Lock()
	if binary.calls == nil {
		binary.calls = map[testing.TB]map[string]int{}
	}
	byKind, seen := binary.calls[t]
	if !seen {
		byKind = map[string]int{}
		binary.calls[t] = byKind
	}
	n := byKind[kind]
	byKind[kind]++
	binary.mu.Unlock()
	if !seen {
		t.Cleanup(func() {
			binary.mu.Lock()
			delete(binary.calls, t)
			binary.mu.Unlock()
		})
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d", t.Name(), kind, n))
	return handoffPrefix + strings.ToUpper(hex.EncodeToString(sum[:8]))
}

// inheritOrStart returns the server of the given kind that test t asks for now, as every
// server-starting function of this package does (see "Child processes" in the package
// documentation). In a child process that inherited it, adopt rebuilds the parent's server from
// the description D the parent exported. Otherwise start starts one and returns it with its
// description, which inheritOrStart exports to child processes until the end of t. When start
// cannot, it fails or skips t itself and returns ok false; inheritOrStart then returns start's
// server as it is (the zero value).
func inheritOrStart[S, D any](t testing.TB, kind string, adopt func(D) S, start func() (s S, desc D, ok bool)) S {
	t.Helper()
	env := handoff(t, kind)
	if s, ok := os.LookupEnv(env); ok {
		var desc D
		if err := json.Unmarshal([]byte(s), &desc); err != nil {
			t.Fatalf("testserver: bad %s=%q from the parent process: %v", env, s, err)
			var zero S
			return zero
		}
		return adopt(desc)
	}
	s, desc, ok := start()
	if !ok {
		return s
	}
	b, err := json.Marshal(desc)
	if err != nil {
		t.Fatalf("testserver: %v", err)
		return s
	}
	// os.Setenv, not t.Setenv: t.Setenv is not allowed in parallel tests.
	os.Setenv(env, string(b))
	t.Cleanup(func() { os.Unsetenv(env) })
	return s
}

// sharedServer is a database server shared by the test binary, in which every test gets a
// database of its own.
type sharedServer interface {
	exec(ctx context.Context, query string) error
	// drop drops database name after closing the connections still using it.
	drop(ctx context.Context, name string) error
	// databaseDSN returns the DSN a test is given for database name.
	databaseDSN(name string) string
}

// database creates a database for t in the server that server returns and returns its DSN
// twice: for t, and as the description handed to child processes. t's cleanup drops the
// database. fn names the calling function for the message that Main is missing. It fails or
// skips t itself and returns false when it cannot.
func database(t testing.TB, fn string, server func(testing.TB) (sharedServer, bool)) (dsn, desc string, ok bool) {
	t.Helper()
	if !needMain(t, fn) {
		return "", "", false
	}
	srv, ok := server(t)
	if !ok {
		return "", "", false
	}
	name := uniqueName(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testserver: %v", err)
		return "", "", false
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := srv.drop(ctx, name); err != nil {
			t.Errorf("testserver: %v", err)
		}
	})
	dsn = srv.databaseDSN(name)
	return dsn, dsn, true
}

// sameDSN is the adopt function of [inheritOrStart] for servers described by a DSN alone.
func sameDSN(dsn string) string { return dsn }

// notOwner fails t for a method that only the process which started the server may call.
func notOwner(t testing.TB, what string) {
	t.Helper()
	t.Fatalf("testserver: %s: not owner: this process uses a server its parent process started, "+
		"and only the parent may stop or start it", what)
}

// Binaries.

// findBinary looks name up on PATH and then in the directories given, and skips or fails t as
// Required says when it is not found; the message names the Debian package to install.
func findBinary(t testing.TB, name, pkg string, dirs ...string) (string, bool) {
	t.Helper()
	path, err := exec.LookPath(name)
	for _, dir := range dirs {
		if err == nil {
			break
		}
		path, err = exec.LookPath(filepath.Join(dir, name))
	}
	if err == nil {
		return path, true
	}
	missing(t, fmt.Sprintf("%s is not installed (%v): install the Debian package %s", name, err, pkg))
	return "", false
}

// missing skips t, or fails it when servers are required.
func missing(t testing.TB, msg string) {
	t.Helper()
	if Required() {
		t.Fatalf("testserver: %s (%s=1: servers are required)", msg, requireEnv)
		return
	}
	t.Skipf("testserver: %s; skipping (set %s=1 to fail instead)", msg, requireEnv)
}

// Ports and directories.

// freePort returns a loopback port nobody listened on a moment ago and this process has not
// handed out before. Another process may still take it before the server binds it, so starts
// are retried with fresh ports.
func freePort() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("testserver: finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		binary.mu.Lock()
		if binary.ports == nil {
			binary.ports = map[int]bool{}
		}
		fresh := !binary.ports[port]
		binary.ports[port] = true
		binary.mu.Unlock()
		if fresh {
			return port, nil
		}
	}
	return 0, errors.New("testserver: no free port found")
}

// makeDir makes a directory in os.TempDir that outlives any one test, marked with this
// process's pid so that sweepStale can remove it once this process is gone. The path stays
// short: Unix socket paths are limited to about 100 bytes.
func makeDir(kind string) (string, error) {
	dir, err := os.MkdirTemp("", dirPrefix+kind+"-")
	if err != nil {
		return "", fmt.Errorf("testserver: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("testserver: %w", err)
	}
	return dir, nil
}

// sweepStale removes the directories made by makeDir in test binaries that are no longer
// running (crashed before Main could clean up).
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // not ours, or still being made
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // owner alive (or the pid was reused: then it waits for a later sweep)
		}
		removePGSharedMemory(filepath.Join(dir, "data"))
		os.RemoveAll(dir)
	}
}

// uniqueName returns a database name made from the test's name and random digits: at most 48
// bytes of [a-z0-9_], so it needs no quoting in PostgreSQL or MariaDB.
func uniqueName(t testing.TB) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(t.Name()) {
		if b.Len() >= 32 {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	b.WriteByte('_')
	b.WriteString(strings.ToLower(rand.Text()[:12]))
	return b.String()
}
