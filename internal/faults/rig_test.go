package faults

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/lock/pglock"
	"github.com/haita/haita/lock/redislock"
	"github.com/haita/haita/lock/redlock"
)

// Environment variables that hand the parent's setup to a worker process.
const (
	envRole = "HAITA_FAULTS_ROLE" // the worker's task; empty in the parent
	envDir  = "HAITA_FAULTS_DIR"  // the directory shared by parent and workers
	envKey  = "HAITA_FAULTS_KEY"
	envArg  = "HAITA_FAULTS_ARG" // a task-specific argument
)

// rig is one backend under test, set up the same way in the parent and in
// its worker processes.
type rig struct {
	name string
	// ttl is the short TTL of the fault tests; zero for backends without
	// TTL.
	ttl time.Duration
	// newLocker returns a Locker closed by t's cleanup.
	newLocker func(t testing.TB, opts lock.Options) lock.Locker
	// probe asks the engine directly, bypassing any proxy, whether owner
	// holds key and for how much longer. Nil for backends without TTL.
	probe func(ctx context.Context, key, owner string) (left time.Duration, held bool, err error)
	// db holds the PostgreSQL resource rows; dir the file register and
	// worker output.
	db  *sql.DB
	dsn string
	dir string
}

// locker returns a Locker with opts, failing t on error.
func (r *rig) locker(t testing.TB, opts lock.Options) lock.Locker {
	t.Helper()
	return r.newLocker(t, opts)
}

// ttlOpts are options with the rig's short TTL.
func (r *rig) ttlOpts() lock.Options { return lock.Options{TTL: r.ttl} }

// child reports whether this process is a worker.
func child() bool { return os.Getenv(envRole) != "" }

// base sets up what every rig shares: the directory and the PostgreSQL
// database with the resource table. It must be the first server call of a
// test so that workers receive the same database.
func base(t *testing.T, name string) *rig {
	t.Helper()
	r := &rig{name: name}
	r.dir = os.Getenv(envDir)
	if r.dir == "" {
		r.dir = t.TempDir()
	}
	dsn := testserver.Postgres(t)
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	db.SetMaxOpenConns(8)
	r.db = db
	r.dsn = dsn
	if !child() {
		if _, err := db.ExecContext(t.Context(), `CREATE TABLE IF NOT EXISTS resource (
			id text PRIMARY KEY, value bigint NOT NULL DEFAULT 0, fence bigint)`); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// closeWith fails t on a constructor's error and closes the Locker in t's
// cleanup: closeWith(t)(redlock.New(...)).
func closeWith(t testing.TB) func(l lock.Locker, err error) lock.Locker {
	return func(l lock.Locker, err error) lock.Locker {
		t.Helper()
		if err != nil {
			t.Fatalf("new locker: %v", err)
		}
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
}

func fileRig(t *testing.T) *rig {
	r := base(t, "filelock")
	locks := filepath.Join(r.dir, "locks")
	r.newLocker = func(t testing.TB, opts lock.Options) lock.Locker {
		opts.TTL = 0
		l, err := filelock.New(locks, opts)
		if err != nil {
			return closeWith(t)(nil, err)
		}
		return closeWith(t)(l, nil)
	}
	return r
}

func redisClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second,
		ContextTimeoutEnabled: true, Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// redisProbe reads owner's hold on key from one Redis.
func redisProbe(ctx context.Context, c redis.Cmdable, key, owner string) (time.Duration, bool, error) {
	v, err := c.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) || (err == nil && v != owner) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	d, err := c.PTTL(ctx, key).Result()
	return d, err == nil && d > 0, err
}

func redisRig(t *testing.T, opts testserver.RedisOptions) (*rig, *testserver.RedisServer) {
	r := base(t, "redis")
	srv := testserver.Redis(t, opts)
	c := redisClient(t, srv.Addr())
	r.ttl = time.Second
	r.newLocker = func(t testing.TB, opts lock.Options) lock.Locker {
		return closeWith(t)(redislockNew(c, opts))
	}
	r.probe = func(ctx context.Context, key, owner string) (time.Duration, bool, error) {
		return redisProbe(ctx, c, key, owner)
	}
	return r, srv
}

func redislockNew(c redislock.Client, opts lock.Options) (lock.Locker, error) {
	return redislock.New(c, opts)
}

func redlockRig(t *testing.T, n int) *rig {
	r := base(t, fmt.Sprintf("redlock-%d", n))
	clients := make([]*redis.Client, n)
	scripters := make([]redis.Scripter, n)
	for i := range n {
		clients[i] = redisClient(t, testserver.Redis(t, testserver.RedisOptions{AppendOnly: true}).Addr())
		scripters[i] = clients[i]
	}
	r.ttl = time.Second
	r.newLocker = func(t testing.TB, opts lock.Options) lock.Locker {
		return closeWith(t)(redlock.New(scripters, opts))
	}
	r.probe = func(ctx context.Context, key, owner string) (time.Duration, bool, error) {
		return quorumProbe(ctx, clients, key, owner)
	}
	return r
}

// quorumProbe reports a Redlock lease as held while a majority holds it,
// for as long as the majority's shortest remaining time.
func quorumProbe(ctx context.Context, clients []*redis.Client, key, owner string) (time.Duration, bool, error) {
	var lefts []time.Duration
	var errs []error
	for _, c := range clients {
		d, held, err := redisProbe(ctx, c, key, owner)
		if err != nil {
			errs = append(errs, err)
		}
		if held {
			lefts = append(lefts, d)
		}
	}
	q := len(clients)/2 + 1
	if len(lefts) < q {
		if len(lefts)+len(errs) >= q {
			return 0, false, errors.Join(errs...)
		}
		return 0, false, nil
	}
	slices.Sort(lefts)
	slices.Reverse(lefts)
	return lefts[q-1], true, nil
}

func pgPool(t testing.TB, dsn string) *pgxpool.Pool {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// pgProbe reads owner's hold on key from the lease table.
func pgProbe(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, key, owner string) (time.Duration, bool, error) {
	var ms int64
	err := q.QueryRowContext(ctx, `SELECT (extract(epoch FROM expires_at - now()) * 1000)::bigint
		FROM haita_locks WHERE key = $1 AND owner = $2 AND expires_at > now()`, key, owner).Scan(&ms)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return time.Duration(ms) * time.Millisecond, err == nil, err
}

// pgRig keeps the lease table in the resource database.
func pgRig(t *testing.T) *rig {
	r := base(t, "postgres")
	if !child() {
		if err := pglock.CreateTableDB(t.Context(), r.db, pglock.DefaultTable); err != nil {
			t.Fatal(err)
		}
	}
	r.ttl = time.Second
	r.newLocker = func(t testing.TB, opts lock.Options) lock.Locker {
		return closeWith(t)(pglock.NewDB(r.db, opts))
	}
	r.probe = func(ctx context.Context, key, owner string) (time.Duration, bool, error) {
		return pgProbe(ctx, r.db, key, owner)
	}
	return r
}

func etcdClient(t testing.TB, endpoints []string) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second,
		Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// etcdProbe reads owner's key and the remaining TTL of its etcd lease
// (whole seconds, rounded down, as etcd reports it).
func etcdProbe(ctx context.Context, cli *clientv3.Client, key, owner string) (time.Duration, bool, error) {
	resp, err := cli.Get(ctx, etcdlock.DefaultPrefix+key+"\x00"+owner)
	if err != nil || len(resp.Kvs) == 0 {
		return 0, false, err
	}
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
	if err != nil {
		return 0, false, err
	}
	// TTL is -1 once the lease expired; 0 while less than a second is left.
	return time.Duration(ttl.TTL) * time.Second, ttl.TTL >= 0, nil
}

func etcdRig(t *testing.T, members int) (*rig, *testserver.EtcdCluster, *clientv3.Client) {
	r := base(t, fmt.Sprintf("etcd-%d", members))
	cluster := testserver.Etcd(t, members)
	cli := etcdClient(t, cluster.Endpoints())
	r.ttl = 2 * time.Second
	r.newLocker = func(t testing.TB, opts lock.Options) lock.Locker {
		return closeWith(t)(etcdlock.New(cli, opts))
	}
	r.probe = func(ctx context.Context, key, owner string) (time.Duration, bool, error) {
		return etcdProbe(ctx, cli, key, owner)
	}
	return r, cluster, cli
}

// uniqueKey returns a key no other test uses.
func uniqueKey(t testing.TB, what string) string {
	if k := os.Getenv(envKey); k != "" && child() {
		return k
	}
	return "faults/" + what + "/" + lock.NewOwner().String()[:12]
}

// ctxTimeout is a context for one step of a test.
func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// redisNoPersistence is a Redis that forgets everything when it restarts.
var redisNoPersistence = testserver.RedisOptions{}
