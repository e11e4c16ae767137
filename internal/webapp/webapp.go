package webapp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/haita/haita/checkout"
	"github.com/haita/haita/sqlcc"
)

// Options configure an [App]. DB is required; every other zero value selects
// a default.
type Options struct {
	// DB is the database; the App does not close it. Required.
	DB *sql.DB
	// Dialect is DB's SQL dialect. Zero: detected from DB's driver.
	Dialect sqlcc.Dialect
	// Seed inserts the demo users ([DemoUsers]) and documents into a
	// database that has no users yet.
	Seed bool
	// BcryptCost is the cost of new password hashes. Zero selects
	// bcrypt.DefaultCost; it must lie within bcrypt.MinCost..MaxCost.
	BcryptCost int
	// CheckoutIdle is how long a checkout lives without a heartbeat (the
	// page sends one every HeartbeatEvery). Zero selects 2 minutes.
	CheckoutIdle time.Duration
	// CheckoutMaxAge is the longest a checkout lives, heartbeats or not.
	// Zero selects 10 minutes.
	CheckoutMaxAge time.Duration
	// HeartbeatEvery is how often an editing page sends a heartbeat. Zero
	// selects 30 seconds; it must be below CheckoutIdle.
	HeartbeatEvery time.Duration
	// PollInterval is how often the App looks for changes made by other
	// processes sharing the database, for the live updates. Zero selects
	// one second.
	PollInterval time.Duration
	// SessionTTL is how long a sign-in lasts. Zero selects 12 hours.
	SessionTTL time.Duration
	// IdempotencyPurgeEvery is how often expired idempotency keys (kept
	// for a day) are deleted while the App runs. Zero selects one hour.
	IdempotencyPurgeEvery time.Duration
	// SecureCookies marks the session cookie Secure; set it when the App
	// is served over HTTPS.
	SecureCookies bool
	// TrustedOrigins are extra origins (scheme://host[:port]) whose
	// cross-origin requests are allowed to change state.
	TrustedOrigins []string
	// Logger receives request errors. Nil selects slog.Default().
	Logger *slog.Logger
	// Now is the clock. Nil selects time.Now.
	Now func() time.Time
}

// App is the sample web application: pages for people, a JSON API for
// programs, live updates over server-sent events. It is an http.Handler,
// safe for concurrent use; several Apps (in one process or many) may share
// one database. The zero value is not usable: call [New]. Close stops its
// background poller and ends open event streams.
type App struct {
	db      *sql.DB
	dialect sqlcc.Dialect
	opts    Options
	co      *checkout.Manager
	log     *slog.Logger
	now     func() time.Time
	handler http.Handler
	pages   map[string]*template.Template
	hub     *hub
	static  fs.FS
	// throttle holds back password guessing at sign-in.
	throttle *signInThrottle

	idem idemState // see idempotency.go

	dummyHash []byte
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var _ http.Handler = (*App)(nil)

// New creates the App's tables if they do not exist (and seeds the demo
// data if Options.Seed), and starts its live-update poller and the periodic
// purge of expired idempotency keys. The caller must call Close. Invalid
// options and database errors are returned.
func New(ctx context.Context, opts Options) (*App, error) {
	if opts.DB == nil {
		return nil, errors.New("webapp: Options.DB is required")
	}
	def := func(d *time.Duration, v time.Duration, name string) error {
		if *d < 0 {
			return fmt.Errorf("webapp: negative %s %v", name, *d)
		}
		if *d == 0 {
			*d = v
		}
		return nil
	}
	for _, x := range []struct {
		d    *time.Duration
		v    time.Duration
		name string
	}{
		{&opts.CheckoutIdle, 2 * time.Minute, "CheckoutIdle"},
		{&opts.CheckoutMaxAge, 10 * time.Minute, "CheckoutMaxAge"},
		{&opts.HeartbeatEvery, 30 * time.Second, "HeartbeatEvery"},
		{&opts.PollInterval, time.Second, "PollInterval"},
		{&opts.SessionTTL, 12 * time.Hour, "SessionTTL"},
		{&opts.IdempotencyPurgeEvery, time.Hour, "IdempotencyPurgeEvery"},
	} {
		if err := def(x.d, x.v, x.name); err != nil {
			return nil, err
		}
	}
	if opts.HeartbeatEvery >= opts.CheckoutIdle {
		return nil, fmt.Errorf("webapp: HeartbeatEvery %v must be below CheckoutIdle %v", opts.HeartbeatEvery, opts.CheckoutIdle)
	}
	if opts.BcryptCost == 0 {
		opts.BcryptCost = bcrypt.DefaultCost
	}
	if opts.BcryptCost < bcrypt.MinCost || opts.BcryptCost > bcrypt.MaxCost {
		return nil, fmt.Errorf("webapp: BcryptCost %d out of range", opts.BcryptCost)
	}
	a := &App{db: opts.DB, dialect: opts.Dialect, opts: opts, log: opts.Logger, now: opts.Now, hub: newHub()}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.throttle = newSignInThrottle(a.now)
	if a.dialect == sqlcc.Unknown {
		d, err := sqlcc.DetectDialect(opts.DB)
		if err != nil {
			return nil, fmt.Errorf("webapp: %w", err)
		}
		a.dialect = d
	}
	store, err := checkout.NewSQLStore(opts.DB, checkout.SQLOptions{Table: tCheckouts, Dialect: a.dialect})
	if err != nil {
		return nil, fmt.Errorf("webapp: %w", err)
	}
	if err := store.CreateTable(ctx); err != nil {
		return nil, fmt.Errorf("webapp: %w", err)
	}
	if a.co, err = checkout.New(store, checkout.Options{Idle: opts.CheckoutIdle, MaxAge: opts.CheckoutMaxAge, Now: a.now}); err != nil {
		return nil, fmt.Errorf("webapp: %w", err)
	}
	if a.dummyHash, err = bcrypt.GenerateFromPassword([]byte("not a password"), opts.BcryptCost); err != nil {
		return nil, fmt.Errorf("webapp: %w", err)
	}
	if err := a.setup(ctx); err != nil {
		return nil, err
	}
	if err := a.setupIdempotency(ctx); err != nil {
		return nil, err
	}
	if err := a.loadTemplates(); err != nil {
		return nil, err
	}
	h, err := a.routes()
	if err != nil {
		return nil, err
	}
	a.handler = h
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel = cancel
	a.wg.Go(func() { a.poll(pctx) })
	a.wg.Go(func() { a.purgeKeys(pctx) })
	return a, nil
}

// ServeHTTP serves the pages, the API and the event stream.
func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.handler.ServeHTTP(w, r) }

// Close ends open event streams and stops the poller and the purging of
// expired idempotency keys, waiting for them. It does not close the
// database. Close is idempotent.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		a.CloseStreams()
		a.cancel()
		a.wg.Wait()
	})
	return nil
}

// CloseStreams ends open event streams without stopping the App, so that
// http.Server.Shutdown need not wait for them; register it with
// http.Server.RegisterOnShutdown.
func (a *App) CloseStreams() {
	a.hub.mu.Lock()
	defer a.hub.mu.Unlock()
	select {
	case <-a.hub.done:
	default:
		close(a.hub.done)
	}
}
