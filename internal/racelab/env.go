package racelab

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver "mysql"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/lock/memlock"
	"github.com/haita/haita/lock/mysqllock"
	"github.com/haita/haita/lock/pglock"
	"github.com/haita/haita/lock/redislock"
	"github.com/haita/haita/lock/redlock"
	"github.com/haita/haita/sqlcc"
)

// env is the environment of one Run: its config, temporary directory and a
// run id that keeps table names and lock keys apart from other runs on the
// same servers.
type env struct {
	cfg   Config
	dir   string
	runID string

	mu      sync.Mutex
	closers []func()
}

func (e *env) id() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.runID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		e.runID = hex.EncodeToString(b[:])
	}
	return e.runID
}

func (e *env) close() {
	e.mu.Lock()
	cs := e.closers
	e.closers = nil
	e.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// isDB reports whether engine is a SQL database.
func isDB(engine string) bool { return engine == SQLite || engine == Postgres || engine == MySQL }

// sqliteDSN is the DSN of a SQLite database file: WAL, a generous busy
// timeout, and BEGIN IMMEDIATE for write transactions (see sqlcc's docs).
func sqliteDSN(path string) string {
	return "file:" + path + "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

// database is one open database of a case, with the case's table names.
type database struct {
	engine  string
	db      *sql.DB
	dialect sqlcc.Dialect
	suffix  string
}

// db opens the case's database on engine: a fresh SQLite file, or the
// configured server. Tables made with create are dropped after the case.
func (rc *runCtx) db(ctx context.Context, engine string) (*database, error) {
	e := rc.env
	var driver, dsn string
	var d sqlcc.Dialect
	switch engine {
	case SQLite:
		driver, dsn, d = "sqlite", sqliteDSN(filepath.Join(e.dir, fmt.Sprintf("case-%d.db", rc.index))), sqlcc.SQLite
	case Postgres:
		driver, dsn, d = "pgx", e.cfg.Postgres, sqlcc.Postgres
	case MySQL:
		driver, dsn, d = "mysql", e.cfg.MySQL, sqlcc.MySQL
	default:
		return nil, fmt.Errorf("racelab: %s is not a database engine", engine)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("racelab: open %s: %w", engine, err)
	}
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(64)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("racelab: connect to %s: %w", engine, err)
	}
	rc.onClose(func() { db.Close() })
	return &database{engine: engine, db: db, dialect: d, suffix: fmt.Sprintf("%s_%d", e.id(), rc.index)}, nil
}

// name returns the case's table name for base.
func (d *database) name(base string) string { return "race_" + base + "_" + d.suffix }

// table returns an sqlcc.Table for base.
func (d *database) table(base string) sqlcc.Table {
	return sqlcc.Table{Dialect: d.dialect, Name: d.name(base)}
}

// q rewrites a query written with ? placeholders and {base} table names for
// the dialect.
func (d *database) q(query string) string {
	for {
		i := strings.IndexByte(query, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(query[i:], '}')
		query = query[:i] + d.name(query[i+1:i+j]) + query[i+j+1:]
	}
	return d.dialect.Rebind(query)
}

// create creates a table from a statement written with {base} names and
// drops it after the case.
func (rc *runCtx) create(ctx context.Context, d *database, base, ddl string) error {
	if _, err := d.db.ExecContext(ctx, d.q(ddl)); err != nil {
		return fmt.Errorf("racelab: create %s: %w", base, err)
	}
	if d.engine != SQLite {
		name := d.name(base)
		rc.onClose(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = d.db.ExecContext(ctx, "DROP TABLE "+name)
		})
	}
	return nil
}

func (d *database) exec(ctx context.Context, query string, args ...any) error {
	_, err := d.db.ExecContext(ctx, d.q(query), args...)
	return err
}

func (d *database) int(ctx context.Context, query string, args ...any) (int64, error) {
	var n sql.NullInt64
	err := d.db.QueryRowContext(ctx, d.q(query), args...).Scan(&n)
	return n.Int64, err
}

// lockSpec says how to open a Locker; it travels to worker processes as
// flags.
type lockSpec struct {
	Engine    string
	Dir       string // filelock
	Postgres  string
	MySQL     string
	Redis     string
	Redlock   []string
	Etcd      []string
	TTL       time.Duration
	WaitLimit time.Duration
}

func (e *env) lockSpec(engine string) lockSpec {
	return lockSpec{
		Engine: engine, Dir: filepath.Join(e.dir, "locks"),
		Postgres: e.cfg.Postgres, MySQL: e.cfg.MySQL, Redis: e.cfg.Redis, Redlock: e.cfg.Redlock, Etcd: e.cfg.Etcd,
	}
}

// args encodes s as worker flags.
func (s lockSpec) args() []string {
	return []string{
		"--lock", s.Engine, "--lockdir", s.Dir, "--postgres", s.Postgres, "--mysql", s.MySQL, "--redis", s.Redis,
		"--redlock", strings.Join(s.Redlock, ","), "--etcd", strings.Join(s.Etcd, ","),
		"--ttl", s.TTL.String(), "--waitlimit", s.WaitLimit.String(),
	}
}

// isLockEngine reports whether engine is a lock.Locker backend.
func isLockEngine(engine string) bool {
	switch engine {
	case Memlock, Filelock, Redis, Redlock, Postgres, MySQL, Etcd:
		return true
	}
	return false
}

// lockBackendName is the haita package behind a lock engine.
func lockBackendName(engine string) string {
	switch engine {
	case Redis:
		return "redislock"
	case Postgres:
		return "pglock"
	case MySQL:
		return "mysqllock"
	case Etcd:
		return "etcdlock"
	}
	return engine
}

// openLocker opens a Locker of s; the returned close function closes it and
// its clients.
func openLocker(ctx context.Context, s lockSpec) (lock.Locker, func(), error) {
	opts := lock.Options{TTL: s.TTL, WaitLimit: s.WaitLimit}
	switch s.Engine {
	case Memlock:
		l, err := memlock.New(opts)
		if err != nil {
			return nil, nil, err
		}
		return l, func() { l.Close() }, nil
	case Filelock:
		l, err := filelock.New(s.Dir, opts)
		if err != nil {
			return nil, nil, err
		}
		return l, func() { l.Close() }, nil
	case Redis:
		c := redis.NewClient(&redis.Options{Addr: s.Redis})
		l, err := redislock.New(c, opts)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return l, func() { l.Close(); c.Close() }, nil
	case Redlock:
		var cs []redis.Scripter
		var closeAll []func() error
		for _, a := range s.Redlock {
			c := redis.NewClient(&redis.Options{Addr: a})
			cs = append(cs, c)
			closeAll = append(closeAll, c.Close)
		}
		done := func() {
			for _, f := range closeAll {
				f()
			}
		}
		l, err := redlock.New(cs, opts)
		if err != nil {
			done()
			return nil, nil, err
		}
		return l, func() { l.Close(); done() }, nil
	case Postgres:
		pool, err := pgxpool.New(ctx, s.Postgres)
		if err != nil {
			return nil, nil, err
		}
		if err := pglock.CreateTable(ctx, pool, pglock.DefaultTable); err != nil {
			pool.Close()
			return nil, nil, err
		}
		l, err := pglock.New(pool, opts)
		if err != nil {
			pool.Close()
			return nil, nil, err
		}
		return l, func() { l.Close(); pool.Close() }, nil
	case MySQL:
		db, err := sql.Open("mysql", s.MySQL)
		if err != nil {
			return nil, nil, err
		}
		if err := mysqllock.CreateTable(ctx, db, mysqllock.DefaultTable); err != nil {
			db.Close()
			return nil, nil, err
		}
		l, err := mysqllock.New(db, opts)
		if err != nil {
			db.Close()
			return nil, nil, err
		}
		return l, func() { l.Close(); db.Close() }, nil
	case Etcd:
		c, err := clientv3.New(clientv3.Config{Endpoints: s.Etcd, DialTimeout: 5 * time.Second})
		if err != nil {
			return nil, nil, err
		}
		if opts.TTL > 0 && opts.TTL < time.Second {
			opts.TTL = time.Second
		}
		l, err := etcdlock.New(c, opts)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return l, func() { l.Close(); c.Close() }, nil
	}
	return nil, nil, fmt.Errorf("racelab: %s is not a lock engine", s.Engine)
}

// locker opens a Locker for the case and closes it after the case.
func (rc *runCtx) locker(ctx context.Context, engine string, ttl, waitLimit time.Duration) (lock.Locker, error) {
	s := rc.env.lockSpec(engine)
	s.TTL, s.WaitLimit = ttl, waitLimit
	l, closeFn, err := openLocker(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("racelab: open %s: %w", engine, err)
	}
	rc.onClose(closeFn)
	return l, nil
}

// key returns a lock key unique to the run and case.
func (rc *runCtx) key(name string) string {
	return fmt.Sprintf("haita-race/%s/%d/%s", rc.env.id(), rc.index, name)
}
