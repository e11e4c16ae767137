package testserver

import (
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MariaDBInstance is a MariaDB server of its own, started by [MariaDBServer] for one test that
// stops, kills or restarts it. Its methods are safe for concurrent use. In a child process (see
// the package documentation) it only has an address: Stop, Start and Kill fail the test.
type MariaDBInstance struct {
	t     testing.TB
	owner bool
	port  int

	mu   sync.Mutex
	inst *mariaInstance // nil in a child process
}

// MariaDBServer starts a MariaDB server for test t alone, on a free loopback port, in a fresh
// data directory, and returns once it accepts queries. The test's cleanup stops it and removes
// its directory. The database "test" exists; root needs no password (--skip-grant-tables).
//
// The server runs with the settings of [MariaDB]'s shared server; InnoDB flushes its log at
// every commit (the default), so what a committed transaction wrote survives Kill.
// MariaDBServer fails t when the server does not start within 60 seconds, and skips t when
// MariaDB is not installed (see [Required]). It needs [Main] in TestMain. In a child process that
// inherited the parent's server for this call it returns that server.
func MariaDBServer(t testing.TB) *MariaDBInstance {
	t.Helper()
	return inheritOrStart(t, "mariadb-server",
		func(port int) *MariaDBInstance { return &MariaDBInstance{t: t, port: port} },
		func() (*MariaDBInstance, int, bool) { return startMariaDBServer(t) })
}

// startMariaDBServer starts a server of its own for t and returns it with its port. It fails or
// skips t itself and returns false when it cannot.
func startMariaDBServer(t testing.TB) (*MariaDBInstance, int, bool) {
	t.Helper()
	if !needMain(t, "MariaDBServer") {
		return nil, 0, false
	}
	server, ok := findBinary(t, "mariadbd", "mariadb-server", "/usr/sbin")
	if !ok {
		return nil, 0, false
	}
	install, ok := findBinary(t, "mariadb-install-db", "mariadb-server", "/usr/bin")
	if !ok {
		return nil, 0, false
	}
	inst, err := startMariaDB(install, server)
	if err != nil {
		t.Fatalf("testserver: %v", err)
		return nil, 0, false
	}
	if err := inst.exec(t.Context(), "CREATE DATABASE IF NOT EXISTS test"); err != nil {
		_ = inst.close()
		t.Fatalf("testserver: %v", err)
		return nil, 0, false
	}
	t.Cleanup(func() {
		if err := inst.close(); err != nil {
			t.Errorf("testserver: %v", err)
		}
	})
	return &MariaDBInstance{t: t, owner: true, port: inst.port, inst: inst}, inst.port, true
}

// Addr returns the server's address, "127.0.0.1:port". It stays the same across Stop and Start.
func (s *MariaDBInstance) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// DSN returns the DSN, for github.com/go-sql-driver/mysql, of database db as root:
// "root@tcp(127.0.0.1:PORT)/DB?parseTime=true".
func (s *MariaDBInstance) DSN(db string) string {
	return "root@tcp(" + s.Addr() + ")/" + db + "?parseTime=true"
}

// Stop shuts the server down cleanly (SIGTERM) and waits for it to exit. Stop does nothing when
// the server is already down.
func (s *MariaDBInstance) Stop() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "MariaDBInstance.Stop")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inst.p.stop(syscall.SIGTERM, 60*time.Second)
}

// Kill kills the server with SIGKILL, as a crash would, and waits for it to exit. The next
// Start runs InnoDB's crash recovery. Kill does nothing when the server is down.
func (s *MariaDBInstance) Kill() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "MariaDBInstance.Kill")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inst.p.running() {
		s.inst.p.kill()
	}
}

// Start starts the server again after Stop or Kill, on the same port with the same data, and
// waits until it accepts queries. It fails the test when the server does not come up within 60
// seconds. Start does nothing when the server is running.
func (s *MariaDBInstance) Start() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "MariaDBInstance.Start")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inst.p.running() {
		return
	}
	p, err := launch(func() (command, error) { return s.inst.command(), nil }, 60*time.Second, s.inst.ready)
	if err != nil {
		s.t.Fatalf("testserver: restarting MariaDB on %s: %v", s.Addr(), err)
		return
	}
	s.inst.p = p
}
