package testserver_test

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haita/haita/internal/testserver"
)

// The examples below need real servers, so they are compiled but not run; each shows the body
// of an ordinary test in a package whose TestMain calls testserver.Main.

func ExampleMain() {
	// In any _test.go file of the package:
	//
	//	func TestMain(m *testing.M) { testserver.Main(m) }
	_ = testserver.Main
}

func ExampleRedis() {
	testCounter := func(t *testing.T) {
		srv := testserver.Redis(t, testserver.RedisOptions{})
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer rdb.Close()

		if err := rdb.Incr(t.Context(), "counter").Err(); err != nil {
			t.Fatal(err)
		}
	}
	_ = testCounter
}

func ExampleRedisServer_Kill() {
	testSurvivesCrash := func(t *testing.T) {
		srv := testserver.Redis(t, testserver.RedisOptions{AppendOnly: true})
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer rdb.Close()

		rdb.Set(t.Context(), "k", "v", 0)
		srv.Kill()  // SIGKILL: a crash
		srv.Start() // same port, same append-only file
		if v, err := rdb.Get(t.Context(), "k").Result(); err != nil || v != "v" {
			t.Fatalf("Get = %q, %v", v, err)
		}
	}
	_ = testSurvivesCrash
}

func ExampleRedisCluster() {
	testCluster := func(t *testing.T) {
		c := testserver.RedisCluster(t, 3)
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
		defer rdb.Close()

		if err := rdb.Set(t.Context(), "{user:1}:name", "ann", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	_ = testCluster
}

func ExamplePostgres() {
	testOrders := func(t *testing.T) {
		pool, err := pgxpool.New(t.Context(), testserver.Postgres(t)) // a database of this test's own
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()

		if _, err := pool.Exec(t.Context(), "CREATE TABLE orders (id bigint PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
	}
	_ = testOrders
}

func ExamplePostgresServer() {
	testRecovery := func(t *testing.T) {
		srv := testserver.PostgresServer(t) // a server of this test's own
		pool, err := pgxpool.New(t.Context(), srv.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()

		srv.Kill()  // every backend dies: connections in the pool break
		srv.Start() // crash recovery, same port
		if err := pool.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	_ = testRecovery
}

func ExampleMariaDB() {
	testStock := func(t *testing.T) {
		db, err := sql.Open("mysql", testserver.MariaDB(t)) // import _ "github.com/go-sql-driver/mysql"
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()

		if _, err := db.ExecContext(t.Context(), "CREATE TABLE stock (sku varchar(32) PRIMARY KEY, n int)"); err != nil {
			t.Fatal(err)
		}
	}
	_ = testStock
}

func ExampleEtcd() {
	testFailover := func(t *testing.T) {
		c := testserver.Etcd(t, 3)
		cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()

		c.StopMember(0) // two of three still make a quorum
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if _, err := cli.Put(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
		c.StartMember(0)
	}
	_ = testFailover
}

func ExampleChildEnv() {
	// A test that runs itself again in a second process. Both processes call the same
	// functions in the same order and get the same servers; only the parent owns them.
	testTwoProcesses := func(t *testing.T) {
		srv := testserver.Redis(t, testserver.RedisOptions{})
		dsn := testserver.Postgres(t)
		_, _ = srv, dsn

		if os.Getenv("HAITA_TS_CHILD") == "1" {
			// The child's side of the test: compete with the parent through srv.Addr() and dsn.
			return
		}
		cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^"+t.Name()+"$")
		// os.Environ() carries the servers too; ChildEnv is for an environment built from scratch.
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HAITA_TS_CHILD=1"}, testserver.ChildEnv()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
	}
	_ = testTwoProcesses
}
