package testserver

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // the driver for the readiness check and CREATE DATABASE
)

// MariaDB returns the DSN, for github.com/go-sql-driver/mysql, of a fresh, empty database for
// test t, in the MariaDB server shared by the test binary:
//
//	root@tcp(127.0.0.1:PORT)/NAME?parseTime=true&multiStatements=false
//
// The server runs with --skip-grant-tables, so root needs no password and every connection may
// do anything. It starts on the first call in the binary and [Main] stops it; every call creates
// its own database, which t's cleanup drops after killing the connections still using it.
//
// The server runs with innodb_lock_wait_timeout=10, max_connections=500, a 64 MB buffer pool
// and no binary log. MariaDB fails t when the server or the database cannot be made, and skips t
// when MariaDB is not installed (see [Required]). It needs [Main] in TestMain. In a child process
// that inherited the parent's database for this call (see the package documentation) it returns
// the parent's DSN, and the child does not drop the database.
func MariaDB(t testing.TB) string {
	t.Helper()
	return inheritOrStart(t, "mariadb", sameDSN,
		func() (string, string, bool) { return database(t, "MariaDB", mariaShared) })
}

// mariaShared returns the MariaDB server shared by the test binary, starting it on first use.
// It fails or skips t itself and returns false when it cannot.
func mariaShared(t testing.TB) (sharedServer, bool) {
	t.Helper()
	server, ok := findBinary(t, "mariadbd", "mariadb-server", "/usr/sbin")
	if !ok {
		return nil, false
	}
	install, ok := findBinary(t, "mariadb-install-db", "mariadb-server", "/usr/bin")
	if !ok {
		return nil, false
	}
	inst, err := binary.maria.get(func() (*mariaInstance, error) { return startMariaDB(install, server) })
	if err != nil {
		t.Fatalf("testserver: the shared MariaDB server: %v", err)
		return nil, false
	}
	return inst, true
}

// mariaInstance is a mariadbd in its own directory: data in dir/data, the socket and the log
// in dir.
type mariaInstance struct {
	dir    string
	server string // the mariadbd binary
	port   int
	p      *proc
}

// noNativeAIO makes InnoDB do its own I/O threads instead of Linux native
// AIO: every server reserves AIO contexts from the machine-wide fs.aio-max-nr,
// which several test binaries starting servers at once can exhaust (a
// likely cause of a seen "Installation of system tables failed" under load).
const noNativeAIO = "--innodb-use-native-aio=0"

func startMariaDB(install, server string) (*mariaInstance, error) {
	dir, err := makeDir("mariadb")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	// --no-defaults everywhere: /etc/mysql/my.cnf points at /run/mysqld and the system server.
	setup := command{
		path: install,
		args: []string{"--no-defaults", "--user=root", "--datadir=" + filepath.Join(dir, "data"),
			"--auth-root-authentication-method=normal", "--skip-test-db", noNativeAIO},
		dir: dir,
		log: filepath.Join(dir, "install.log"),
	}
	if err := setup.run(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	m := &mariaInstance{dir: dir, server: server}
	m.p, err = launch(func() (command, error) {
		port, err := freePort()
		m.port = port
		return m.command(), err
	}, 60*time.Second, m.ready)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return m, nil
}

// command is the server's command line, on m.port.
func (m *mariaInstance) command() command {
	return command{
		path: m.server,
		args: []string{
			"--no-defaults",
			"--user=root",
			"--datadir=" + filepath.Join(m.dir, "data"),
			"--socket=" + filepath.Join(m.dir, "sock"),
			"--pid-file=" + filepath.Join(m.dir, "mariadbd.pid"),
			"--port=" + strconv.Itoa(m.port),
			"--bind-address=127.0.0.1",
			"--skip-grant-tables",
			"--skip-name-resolve",
			"--skip-log-bin",
			"--innodb-lock-wait-timeout=10",
			"--max-connections=500",
			"--innodb-buffer-pool-size=64M",
			noNativeAIO,
		},
		dir: m.dir,
		log: filepath.Join(m.dir, "mariadbd.log"),
	}
}

func (m *mariaInstance) ready(ctx context.Context) error { return m.exec(ctx, "SELECT 1") }

// dsn returns the DSN of database db, without parameters.
func (m *mariaInstance) dsn(db string) string {
	return fmt.Sprintf("root@tcp(127.0.0.1:%d)/%s", m.port, db)
}

func (m *mariaInstance) databaseDSN(name string) string {
	return m.dsn(name) + "?parseTime=true&multiStatements=false"
}

// open opens a single-connection pool as root. A DDL statement waits at most 30 seconds for
// metadata locks (the server's default is a year).
func (m *mariaInstance) open() (*sql.DB, error) {
	db, err := sql.Open("mysql", m.dsn("")+"?timeout=5s&lock_wait_timeout=30")
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

func (m *mariaInstance) exec(ctx context.Context, query string) error {
	db, err := m.open()
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, query); err != nil {
		return fmt.Errorf("%s: %w", query, err)
	}
	return nil
}

// drop kills the connections that use database name, as PostgreSQL's DROP DATABASE WITH
// (FORCE) does, and drops it.
func (m *mariaInstance) drop(ctx context.Context, name string) error {
	db, err := m.open()
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx,
		"SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()", name)
	if err != nil {
		return err
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		db.ExecContext(ctx, "KILL CONNECTION "+strconv.FormatInt(id, 10)) // gone already is fine
	}
	if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name); err != nil {
		return fmt.Errorf("DROP DATABASE %s: %w", name, err)
	}
	return nil
}

// close stops the server (SIGTERM: a clean shutdown) and removes its directory.
func (m *mariaInstance) close() error {
	m.p.stop(syscall.SIGTERM, 60*time.Second)
	return os.RemoveAll(m.dir)
}
