package webapp

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"golang.org/x/crypto/bcrypt"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/haita/haita/sqlcc"
)

// OpenDB opens the database named by dsn: a postgres:// or postgresql://
// URL (driver pgx), a mysql://user:pass@host:port/db URL (go-sql-driver), or
// else the path of a SQLite file (modernc.org/sqlite), optionally prefixed by
// "sqlite://" or "file:", created if missing. It pings the database and
// reports its dialect. The caller must Close the returned *sql.DB.
func OpenDB(ctx context.Context, dsn string) (*sql.DB, sqlcc.Dialect, error) {
	var (
		db *sql.DB
		d  sqlcc.Dialect
	)
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		var err error
		if db, err = sql.Open("pgx", dsn); err != nil {
			return nil, 0, fmt.Errorf("webapp: open postgres: %w", err)
		}
		d = sqlcc.Postgres
	case strings.HasPrefix(dsn, "mysql://"):
		cfg, err := mysqlConfig(dsn)
		if err != nil {
			return nil, 0, err
		}
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, 0, fmt.Errorf("webapp: open mysql: %w", err)
		}
		db, d = sql.OpenDB(conn), sqlcc.MySQL
	default:
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite://"), "file:")
		if path == "" || strings.ContainsAny(path, "?#") {
			return nil, 0, fmt.Errorf("webapp: invalid SQLite file name %q", dsn)
		}
		// Immediate transactions take the write lock at BEGIN, so a
		// read-then-write transaction never fails with BUSY_SNAPSHOT;
		// busy_timeout makes writers wait for each other instead of failing.
		v := url.Values{}
		v.Add("_pragma", "busy_timeout(10000)")
		v.Add("_pragma", "journal_mode(WAL)")
		v.Add("_pragma", "foreign_keys(1)")
		v.Set("_txlock", "immediate")
		var err error
		if db, err = sql.Open("sqlite", "file:"+path+"?"+v.Encode()); err != nil {
			return nil, 0, fmt.Errorf("webapp: open sqlite: %w", err)
		}
		db.SetMaxOpenConns(4)
		d = sqlcc.SQLite
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, 0, fmt.Errorf("webapp: connect to %s: %w", d, err)
	}
	return db, d, nil
}

// MySQLDSN turns a mysql://user:pass@host[:port]/db[?query] URL, as
// [OpenDB] takes it, into the DSN of github.com/go-sql-driver/mysql. It
// returns an error naming what is wrong for a URL it cannot read.
func MySQLDSN(url string) (string, error) {
	cfg, err := mysqlConfig(url)
	if err != nil {
		return "", err
	}
	return cfg.FormatDSN(), nil
}

// mysqlConfig reads a mysql://user:pass@host[:port]/db[?query] URL. The
// query is that of a go-sql-driver DSN: the driver's options (parseTime,
// tls, timeout, ...) configure the driver, and any other name is a system
// variable set on each connection.
func mysqlConfig(dsn string) (*mysql.Config, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, fmt.Errorf("webapp: invalid MySQL URL: %w", err)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = u.Host + ":3306"
	}
	name := strings.TrimPrefix(u.Path, "/")
	if name == "" {
		return nil, errors.New("webapp: MySQL URL names no database")
	}
	// The driver's own parser tells its options from system variables;
	// user, password and database are set afterwards, so that no character
	// in them can be taken for DSN syntax. Encode escapes every '/' in the
	// query, which the parser would otherwise take for the one before the
	// database.
	cfg, err := mysql.ParseDSN("tcp(" + addr + ")/?" + u.Query().Encode())
	if err != nil {
		return nil, fmt.Errorf("webapp: invalid MySQL URL: %w", err)
	}
	cfg.DBName = name
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
	}
	return cfg, nil
}

// Table names. They are constants: no SQL here is built from input.
const (
	tUsers     = "haita_users"
	tDocs      = "haita_documents"
	tSessions  = "haita_sessions"
	tCheckouts = "haita_checkouts"
)

func schema(d sqlcc.Dialect) []string {
	text, opts := "TEXT", ""
	if d == sqlcc.MySQL {
		text, opts = "MEDIUMTEXT", " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
	}
	return []string{
		`CREATE TABLE IF NOT EXISTS ` + tUsers + ` (
			name VARCHAR(64) NOT NULL PRIMARY KEY,
			display VARCHAR(100) NOT NULL,
			password_hash VARCHAR(100) NOT NULL,
			admin INT NOT NULL DEFAULT 0,
			token_hash CHAR(64) NOT NULL UNIQUE
		)` + opts,
		`CREATE TABLE IF NOT EXISTS ` + tDocs + ` (
			id VARCHAR(64) NOT NULL PRIMARY KEY,
			title VARCHAR(200) NOT NULL,
			body ` + text + ` NOT NULL,
			policy VARCHAR(20) NOT NULL,
			version BIGINT NOT NULL,
			stamp BIGINT NOT NULL DEFAULT 0,
			updated_by VARCHAR(64) NOT NULL,
			updated_at BIGINT NOT NULL
		)` + opts,
		`CREATE TABLE IF NOT EXISTS ` + tSessions + ` (
			id_hash CHAR(64) NOT NULL PRIMARY KEY,
			user_name VARCHAR(64) NOT NULL,
			csrf CHAR(43) NOT NULL,
			expires BIGINT NOT NULL
		)` + opts,
	}
}

// demoUser is a user seeded into an empty database.
type demoUser struct {
	Name, Display, Password string
	Admin                   bool
}

// DemoUsers are the users a new database gets; [Setup] seeds them and
// haita serve prints their logins. Their API tokens are [DemoToken].
var DemoUsers = []demoUser{
	{"alice", "Alice", "alice", false},
	{"bob", "Bob", "bob", false},
	{"admin", "Admin", "admin", true},
}

// DemoToken returns the API token of a demo user: well known, like its
// password, because the data is for demonstration.
func DemoToken(name string) string { return "haita-demo-" + name }

var demoDocs = []struct{ id, title, policy, body string }{
	{"welcome", "Welcome to haita", LastWriteWins, "This note uses last-write-wins: every save replaces what is there.\nFine for a scratch pad with one writer; wrong for anything that matters.\n\nTry the other two documents to see why.\n"},
	{"release-plan", "Release plan", Optimistic, "Release 1.4\n\n- freeze on Monday\n- release candidate on Wednesday\n- announce on Friday\n\nOwner: Alice\n"},
	{"price-list", "Price list", Optimistic, "Coffee 3.20\nTea 2.80\nCake 4.50\nSandwich 6.00\n"},
	{"contract", "Supplier contract", Pessimistic, "Clause 1. The supplier delivers every Monday.\nClause 2. Payment within 30 days.\nClause 3. Either party may end this contract with 3 months notice.\n"},
	{"handbook", "Team handbook", Pessimistic, "Working hours are flexible between 8:00 and 18:00.\nStand-up at 10:00.\nOn-call rotates weekly.\n"},
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// setup creates the tables if missing and seeds the demo data into an empty
// database. Several processes may run it at once: every insert tolerates the
// row existing already.
func (a *App) setup(ctx context.Context) error {
	for _, s := range schema(a.dialect) {
		if _, err := a.db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("webapp: create tables: %w", err)
		}
	}
	var n int
	if err := a.db.QueryRowContext(ctx, a.q(`SELECT COUNT(*) FROM `+tUsers)).Scan(&n); err != nil {
		return fmt.Errorf("webapp: count users: %w", err)
	}
	if n > 0 || !a.opts.Seed {
		return nil
	}
	now := a.now().UnixMilli()
	for _, u := range DemoUsers {
		h, err := bcrypt.GenerateFromPassword([]byte(u.Password), a.opts.BcryptCost)
		if err != nil {
			return fmt.Errorf("webapp: hash password: %w", err)
		}
		_, err = a.db.ExecContext(ctx, a.q(`INSERT INTO `+tUsers+` (name, display, password_hash, admin, token_hash) VALUES (?, ?, ?, ?, ?)`),
			u.Name, u.Display, string(h), boolInt(u.Admin), hashToken(DemoToken(u.Name)))
		if err != nil && !sqlcc.IsUniqueViolation(err) {
			return fmt.Errorf("webapp: seed user %s: %w", u.Name, err)
		}
	}
	for _, d := range demoDocs {
		_, err := a.db.ExecContext(ctx, a.q(`INSERT INTO `+tDocs+` (id, title, body, policy, version, stamp, updated_by, updated_at) VALUES (?, ?, ?, ?, 1, 0, ?, ?)`),
			d.id, d.title, d.body, d.policy, "admin", now)
		if err != nil && !sqlcc.IsUniqueViolation(err) {
			return fmt.Errorf("webapp: seed document %s: %w", d.id, err)
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// q rewrites the ? placeholders of a constant query for the dialect.
func (a *App) q(query string) string {
	return a.dialect.Rebind(query)
}

// sinceMilli converts stored unix milliseconds to a time.
func sinceMilli(ms int64) time.Time { return time.UnixMilli(ms) }
