package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/haita/haita/internal/webapp"
)

const serveUsage = `Usage: haita serve [flags]

Starts the sample app: documents edited by several people under three
policies (last-write-wins, optimistic, check-out), with live updates and a
JSON API (OpenAPI at /api/openapi.json). It runs until interrupted (SIGINT,
SIGTERM), then shuts the server down.
`

// runServe runs the sample app until ctx ends, then shuts the server down.
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = usageFunc(fs, serveUsage)
	addr := fs.String("addr", "localhost:8080", "listen address")
	dsn := fs.String("db", "haita.db", "database: a SQLite file (created with demo data), or a postgres:// or mysql:// URL")
	seed := fs.Bool("seed", true, "insert demo users and documents into a database without users")
	idle := fs.Duration("checkout-idle", 2*time.Minute, "a checkout ends this long after its last heartbeat")
	maxAge := fs.Duration("checkout-max-age", 10*time.Minute, "a checkout ends this long after it was taken, at the latest")
	hk := housekeepingFlags(fs)
	if err := parseFlags(fs, args, 0, stdout); err != nil {
		return err
	}

	log := slog.New(slog.NewTextHandler(stderr, nil))
	db, dialect, err := webapp.OpenDB(ctx, *dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	app, err := webapp.New(ctx, webapp.Options{DB: db, Dialect: dialect, Seed: *seed, Logger: log,
		CheckoutIdle: *idle, CheckoutMaxAge: *maxAge, HeartbeatEvery: min(30*time.Second, *idle/3)})
	if err != nil {
		return err
	}
	defer app.Close()
	handler, stopHousekeeping, err := hk.start(ctx, app, db, dialect, *dsn, log)
	if err != nil {
		return err
	}
	defer stopHousekeeping()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	srv.RegisterOnShutdown(app.CloseStreams)

	url := "http://" + ln.Addr().String()
	if host, port, _ := net.SplitHostPort(ln.Addr().String()); host == "127.0.0.1" && strings.HasPrefix(*addr, "localhost") {
		url = "http://localhost:" + port
	}
	fmt.Fprintf(stdout, "haita serve: %s (database: %s)\n", url, dialect)
	if *seed {
		fmt.Fprintln(stdout, "demo logins (name / password / API token):")
		for _, u := range webapp.DemoUsers {
			role := ""
			if u.Admin {
				role = "  (administrator)"
			}
			fmt.Fprintf(stdout, "  %-6s / %-6s / %s%s\n", u.Name, u.Password, webapp.DemoToken(u.Name), role)
		}
	}
	fmt.Fprintln(stdout, "press Ctrl-C to stop")

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("serve: shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
