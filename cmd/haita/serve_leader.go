package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/haita/haita/election"
	"github.com/haita/haita/internal/webapp"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/lock/mysqllock"
	"github.com/haita/haita/lock/pglock"
	"github.com/haita/haita/sqlcc"
)

// housekeeping holds serve's flags for the leader election that decides
// which instance sweeps.
type housekeeping struct {
	instance *string
	ttl      *time.Duration
	every    *time.Duration
}

func housekeepingFlags(fs *flag.FlagSet) housekeeping {
	return housekeeping{
		instance: fs.String("instance", "", "this instance's name, shown as the housekeeping leader (default: host name/pid N)"),
		ttl:      fs.Duration("leader-ttl", 10*time.Second, "the housekeeping leader's lease: another instance takes over this long after the leader stops"),
		every:    fs.Duration("housekeeping-every", 30*time.Second, "how often the leader sweeps expired checkouts and sign-ins"),
	}
}

// start elects the housekeeping leader among the instances sharing the
// database — over pglock on PostgreSQL, mysqllock on MySQL/MariaDB and
// lock files beside a SQLite file — and runs
// the housekeeping while leading. It returns the handler to serve (the App,
// with /leader and /api/leader) and a function that stops the election and
// waits for it.
func (h housekeeping) start(ctx context.Context, app *webapp.App, db *sql.DB, dialect sqlcc.Dialect, dsn string, log *slog.Logger) (http.Handler, func(), error) {
	if *h.ttl < time.Second {
		return nil, nil, usageErrorf("serve", "--leader-ttl %v must be at least 1s", *h.ttl)
	}
	if *h.every <= 0 {
		return nil, nil, usageErrorf("serve", "--housekeeping-every %v must be positive", *h.every)
	}
	if *h.instance == "" {
		host, _ := os.Hostname()
		*h.instance = fmt.Sprintf("%s/pid %d", host, os.Getpid())
	}
	opts := lock.Options{TTL: *h.ttl, AutoRefresh: true, Holder: *h.instance}
	var l lock.Locker
	var err error
	switch dialect {
	case sqlcc.Postgres:
		if err = pglock.CreateTableDB(ctx, db, ""); err == nil {
			l, err = pglock.NewDB(db, opts)
		}
	case sqlcc.SQLite:
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite://"), "file:")
		opts.TTL, opts.AutoRefresh = 0, false // the OS frees a dead process's lock
		l, err = filelock.New(path+".locks", opts)
	case sqlcc.MySQL:
		if err = mysqllock.CreateTable(ctx, db, ""); err == nil {
			l, err = mysqllock.New(db, opts)
		}
	default:
		err = fmt.Errorf("no lock backend for dialect %v", dialect)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("serve: housekeeping election: %w", err)
	}
	e, err := election.New(l, "haita/housekeeping", election.Options{PollInterval: time.Second})
	if err == nil {
		var hk *webapp.Housekeeper
		if hk, err = webapp.NewHousekeeper(app, e, *h.instance, *h.every); err == nil {
			rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			var wg sync.WaitGroup
			wg.Go(func() { _ = hk.Run(rctx) })
			mux := http.NewServeMux()
			mux.Handle("/leader", hk)
			mux.Handle("/api/leader", hk)
			mux.Handle("/", app)
			log.Info("housekeeping election", "instance", *h.instance, "engine", l.Capabilities().Name)
			return mux, func() { cancel(); wg.Wait(); _ = l.Close() }, nil
		}
	}
	_ = l.Close()
	return nil, nil, fmt.Errorf("serve: housekeeping: %w", err)
}
