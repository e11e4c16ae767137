package faults

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/mysqllock"
)

// The MySQL/MariaDB rows of the fault suite: the lease table lives in a
// MariaDB database; the resources stay in PostgreSQL and the file, as for
// every backend.

// openMySQL opens dsn with a short dial timeout, closed by t's cleanup.
func openMySQL(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 2 * time.Second
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// myProbe reads owner's hold on key from the lease table.
func myProbe(ctx context.Context, db *sql.DB, key, owner string) (time.Duration, bool, error) {
	var us int64
	err := db.QueryRowContext(ctx, `SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), expires_at)
		FROM haita_locks WHERE lock_key = ? AND owner = ? AND expires_at > UTC_TIMESTAMP(6)`, key, owner).Scan(&us)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return time.Duration(us) * time.Microsecond, err == nil, err
}

// myRigOn is a MySQL rig whose lease table is in the database dsn.
func myRigOn(t *testing.T, r *rig, dsn string) *rig {
	my := openMySQL(t, dsn)
	if !child() {
		if err := mysqllock.CreateTable(t.Context(), my, mysqllock.DefaultTable); err != nil {
			t.Fatal(err)
		}
	}
	r.ttl = time.Second
	r.newLocker = func(t testing.TB, opts lock.Options) lock.Locker {
		l, err := mysqllock.New(my, opts)
		if err != nil {
			return closeWith(t)(nil, err)
		}
		return closeWith(t)(l, nil)
	}
	r.probe = func(ctx context.Context, key, owner string) (time.Duration, bool, error) {
		return myProbe(ctx, my, key, owner)
	}
	return r
}

func myRig(t *testing.T) *rig {
	r := base(t, "mysql")
	return myRigOn(t, r, testserver.MariaDB(t))
}

func myNet(t *testing.T) *netRig {
	r := base(t, "mysql")
	dsn := testserver.MariaDB(t)
	myRigOn(t, r, dsn)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := proxy(t, cfg.Addr)
	cfg.Addr = p.Listen
	proxied := openMySQL(t, cfg.FormatDSN())
	return &netRig{rig: r, p: p, direct: r.newLocker,
		proxied: func(t testing.TB, opts lock.Options) lock.Locker {
			l, err := mysqllock.New(proxied, opts)
			if err != nil {
				return closeWith(t)(nil, err)
			}
			return closeWith(t)(l, nil)
		}}
}

func TestWorkloadMySQL(t *testing.T)    { workload(t, myRig(t)) }
func TestPauseHolderMySQL(t *testing.T) { pauseHolder(t, myRig(t)) }
func TestKillHolderMySQL(t *testing.T)  { killHolder(t, myRig(t)) }
func TestNetworkMySQL(t *testing.T)     { networkFaults(t, myNet(t)) }

// TestRestartMariaDB kills MariaDB (SIGKILL, InnoDB crash recovery) and
// stops it (clean shutdown) under a held lease: the lease row was committed
// to InnoDB's redo log and survives, nobody else gets the key, the holder
// releases it afterwards, and tokens keep increasing.
func TestRestartMariaDB(t *testing.T) {
	testRestartSQL(t, func(t *testing.T) (*rig, sqlServer) {
		srv := testserver.MariaDBServer(t)
		return myRigOn(t, &rig{name: "mysql"}, srv.DSN("test")), srv
	})
}
