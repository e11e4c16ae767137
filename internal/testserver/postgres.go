package testserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"
)

// pgBin is where Debian's postgresql package installs the server (not on
// PATH): /usr/lib/postgresql/<major>/bin, the newest major present; 15 on
// Debian 12.
var pgBin = func() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	best, bestMajor := "/usr/lib/postgresql/15/bin", 0
	for _, d := range dirs {
		if major, err := strconv.Atoi(filepath.Base(filepath.Dir(d))); err == nil && major > bestMajor {
			best, bestMajor = d, major
		}
	}
	return best
}()

// Postgres returns the DSN of a fresh, empty database for test t, in the PostgreSQL 15 server
// shared by the test binary:
//
//	postgres://postgres@127.0.0.1:PORT/NAME?sslmode=disable
//
// which pgx and pgx's database/sql driver (stdlib) both accept. The user postgres is a
// superuser and needs no password. The server starts on the first call in the binary (that
// call may take several seconds) and [Main] stops it; every call creates its own database,
// which t's cleanup drops WITH (FORCE), closing connections left open.
//
// The server runs with max_connections=300 and fsync on. Postgres fails t when the server or
// the database cannot be made, and skips t when PostgreSQL 15 is not installed (see
// [Required]). It needs [Main] in TestMain. In a child process that inherited the parent's
// database for this call (see the package documentation) it returns the parent's DSN, and the
// child does not drop the database.
func Postgres(t testing.TB) string {
	t.Helper()
	return inheritOrStart(t, "postgres", sameDSN,
		func() (string, string, bool) { return database(t, "Postgres", pgShared) })
}

// pgShared returns the PostgreSQL server shared by the test binary, starting it on first use.
// It fails or skips t itself and returns false when it cannot.
func pgShared(t testing.TB) (sharedServer, bool) {
	t.Helper()
	cred, ok := pgPrepare(t)
	if !ok {
		return nil, false
	}
	inst, err := binary.pg.get(func() (*pgInstance, error) {
		tmpl, err := pgTemplate(cred)
		if err != nil {
			return nil, err
		}
		return startPG(tmpl, cred)
	})
	if err != nil {
		t.Fatalf("testserver: the shared PostgreSQL server: %v", err)
		return nil, false
	}
	return inst, true
}

// PostgresInstance is a PostgreSQL 15 server of its own, started by [PostgresServer] for one
// test that stops, kills or restarts it. Its methods are safe for concurrent use. In a child
// process (see the package documentation) it only has an address: Stop, Start and Kill fail the
// test.
type PostgresInstance struct {
	t     testing.TB
	owner bool
	port  int
	inst  *pgInstance // nil in a child process
}

// PostgresServer starts a PostgreSQL 15 server for test t alone, on a free loopback port, from
// a copy of a data directory initialised once per test binary, and returns once it accepts
// queries. The test's cleanup stops it and removes its directory. The database "postgres"
// exists; the user postgres is a superuser and needs no password.
//
// The server runs with max_connections=300 and fsync on, so that what a committed transaction
// wrote survives Kill. PostgresServer fails t when the server does not start within 60 seconds,
// and skips t when PostgreSQL 15 is not installed (see [Required]). It needs [Main] in TestMain.
// In a child process that inherited the parent's server for this call it returns that server.
func PostgresServer(t testing.TB) *PostgresInstance {
	t.Helper()
	return inheritOrStart(t, "postgres-server",
		func(port int) *PostgresInstance { return &PostgresInstance{t: t, port: port} },
		func() (*PostgresInstance, int, bool) { return startPGServer(t) })
}

// startPGServer starts a server of its own for t and returns it with its port. It fails or
// skips t itself and returns false when it cannot.
func startPGServer(t testing.TB) (*PostgresInstance, int, bool) {
	t.Helper()
	if !needMain(t, "PostgresServer") {
		return nil, 0, false
	}
	cred, ok := pgPrepare(t)
	if !ok {
		return nil, 0, false
	}
	tmpl, err := pgTemplate(cred)
	if err != nil {
		t.Fatalf("testserver: %v", err)
		return nil, 0, false
	}
	inst, err := startPG(tmpl, cred)
	if err != nil {
		t.Fatalf("testserver: %v", err)
		return nil, 0, false
	}
	t.Cleanup(func() {
		if err := inst.close(); err != nil {
			t.Errorf("testserver: %v", err)
		}
	})
	return &PostgresInstance{t: t, owner: true, port: inst.port, inst: inst}, inst.port, true
}

// Addr returns the server's address, "127.0.0.1:port". It stays the same across Stop and Start.
func (s *PostgresInstance) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// DSN returns the DSN of database db as user postgres:
// "postgres://postgres@127.0.0.1:PORT/DB?sslmode=disable". The database "postgres" exists;
// others are the test's to create.
func (s *PostgresInstance) DSN(db string) string { return pgDSN(s.port, db) }

// Stop shuts the server down with a fast shutdown (SIGINT: sessions are ended, a checkpoint is
// written) and waits for it to exit. Stop does nothing when the server is already down.
func (s *PostgresInstance) Stop() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "PostgresInstance.Stop")
		return
	}
	s.inst.stop()
}

// Kill kills the server and all its backends with SIGKILL, as a crash would, and waits for the
// server to exit. The next Start runs crash recovery. Kill does nothing when the server is down.
func (s *PostgresInstance) Kill() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "PostgresInstance.Kill")
		return
	}
	s.inst.kill()
}

// Start starts the server again after Stop or Kill, on the same port with the same data, and
// waits until it accepts queries. It fails the test when the server does not come up within 60
// seconds. Start does nothing when the server is running.
func (s *PostgresInstance) Start() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "PostgresInstance.Start")
		return
	}
	if err := s.inst.restart(); err != nil {
		s.t.Fatalf("testserver: restarting PostgreSQL on %s: %v", s.Addr(), err)
	}
}

func pgDSN(port int, db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, url.PathEscape(db))
}

// pgPrepare checks that PostgreSQL is installed and returns the credentials to run it with:
// those of the user postgres when this process runs as root, which PostgreSQL refuses.
func pgPrepare(t testing.TB) (*syscall.Credential, bool) {
	t.Helper()
	for _, name := range []string{"initdb", "postgres"} {
		if _, ok := findBinary(t, filepath.Join(pgBin, name), "postgresql"); !ok {
			return nil, false
		}
	}
	if os.Geteuid() != 0 {
		return nil, true
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		missing(t, fmt.Sprintf("PostgreSQL refuses to run as root and there is no user postgres (%v): install the Debian package postgresql", err))
		return nil, false
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("testserver: user postgres: %v", err)
		return nil, false
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, true
}

// pgTemplate returns a directory holding an initdb'd data directory, "data", made once per test
// binary and removed by Main.
func pgTemplate(cred *syscall.Credential) (string, error) {
	return binary.pgTemplate.get(func() (string, error) {
		dir, err := pgMakeDir("pgtmpl", cred)
		if err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		initdb := command{
			path: filepath.Join(pgBin, "initdb"),
			args: []string{"-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust",
				"-E", "UTF8", "--locale=C.UTF-8", "--no-sync"}, // copies are synced by use, not here
			dir:  dir,
			log:  filepath.Join(dir, "initdb.log"),
			cred: cred,
		}
		if err := initdb.run(ctx); err != nil {
			os.RemoveAll(dir)
			return "", err
		}
		return dir, nil
	})
}

// pgMakeDir makes a directory for PostgreSQL, owned by the user it runs as.
func pgMakeDir(kind string, cred *syscall.Credential) (string, error) {
	dir, err := makeDir(kind)
	if err != nil {
		return "", err
	}
	if cred != nil {
		err = os.Chown(dir, int(cred.Uid), int(cred.Gid))
	}
	if err == nil {
		err = os.Chmod(dir, 0o700)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("testserver: %w", err)
	}
	return dir, nil
}

// pgInstance is a running (or stopped) PostgreSQL server in its own directory: data in
// dir/data, the Unix socket and the log in dir.
type pgInstance struct {
	dir  string
	port int
	cred *syscall.Credential

	mu sync.Mutex
	p  *proc // nil or exited when the server is down
}

// startPG copies the template's data directory and starts a server on it.
func startPG(template string, cred *syscall.Credential) (*pgInstance, error) {
	dir, err := pgMakeDir("pg", cred)
	if err != nil {
		return nil, err
	}
	if err := copyTree(filepath.Join(template, "data"), filepath.Join(dir, "data"), cred); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("testserver: copying the PostgreSQL template: %w", err)
	}
	i := &pgInstance{dir: dir, cred: cred}
	i.p, err = launch(func() (command, error) {
		port, err := freePort()
		i.port = port
		return i.command(), err
	}, 60*time.Second, i.ready)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return i, nil
}

func (i *pgInstance) command() command {
	return command{
		path: filepath.Join(pgBin, "postgres"),
		args: []string{
			"-D", filepath.Join(i.dir, "data"),
			"-p", strconv.Itoa(i.port),
			"-k", i.dir,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "max_connections=300",
			"-c", "fsync=on",
			// Dynamic shared memory in files under the data directory rather than in /dev/shm,
			// where a killed server would leave its segments behind.
			"-c", "dynamic_shared_memory_type=mmap",
		},
		dir:  i.dir,
		log:  filepath.Join(i.dir, "postgres.log"),
		cred: i.cred,
	}
}

func (i *pgInstance) dsn(db string) string { return pgDSN(i.port, db) }

func (i *pgInstance) databaseDSN(name string) string { return i.dsn(name) }

// drop drops database name, closing the connections still using it.
func (i *pgInstance) drop(ctx context.Context, name string) error {
	return i.exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
}

func (i *pgInstance) ready(ctx context.Context) error {
	return i.exec(ctx, "SELECT 1")
}

// exec runs sql in the database postgres on a connection of its own.
func (i *pgInstance) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, i.dsn("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

func (i *pgInstance) stop() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.p != nil {
		i.p.stop(syscall.SIGINT, 60*time.Second)
	}
}

func (i *pgInstance) kill() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.p != nil {
		i.p.killTree()
	}
}

// restart starts the server on its port again. It is retried when the server exits: after a
// kill, a backend that has not yet died still holds the old shared memory for a moment.
func (i *pgInstance) restart() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.p != nil && i.p.running() {
		return nil
	}
	p, err := launch(func() (command, error) { return i.command(), nil }, 60*time.Second, i.ready)
	if err != nil {
		return err
	}
	i.p = p
	return nil
}

// close stops the server and removes its directory.
func (i *pgInstance) close() error {
	i.stop()
	removePGSharedMemory(filepath.Join(i.dir, "data"))
	return os.RemoveAll(i.dir)
}

// removePGSharedMemory removes the System V shared memory segment of a PostgreSQL server that
// was killed and will not be started again. A server that exits normally removes it itself; a
// killed one leaves it (and its key in postmaster.pid), and a later start on the same data
// directory would clean it up, but a removed data directory has no later start.
func removePGSharedMemory(dataDir string) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		return
	}
	f := strings.Fields(lines[6]) // "key id"
	if len(f) != 2 {
		return
	}
	key, err1 := strconv.ParseUint(f[0], 10, 32)
	id, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return
	}
	var desc unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &desc); err != nil || uint32(desc.Perm.Key) != uint32(key) {
		return // gone already, or the id now belongs to someone else's segment
	}
	unix.SysvShmCtl(id, unix.IPC_RMID, nil)
}

// copyTree copies the directory src to dst, keeping modes, owned by cred's user (if not nil).
func copyTree(src, dst string, cred *syscall.Credential) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			err = os.Mkdir(target, info.Mode().Perm())
		case d.Type().IsRegular():
			err = copyFile(path, target, info.Mode().Perm())
		default:
			return fmt.Errorf("%s: cannot copy %v", path, d.Type())
		}
		if err == nil && cred != nil {
			err = os.Lchown(target, int(cred.Uid), int(cred.Gid))
		}
		return err
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
