package idempotency

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/haita/haita/sqlcc"
)

// DefaultTable is the table of a [SQLStore] when SQLOptions.Table is empty.
const DefaultTable = "haita_idempotency"

// SQLOptions configure a [SQLStore]. The zero value is valid.
type SQLOptions struct {
	// Table is the table's name. Zero: [DefaultTable]. Must satisfy
	// sqlcc.ValidIdentifier.
	Table string
	// Dialect is the SQL dialect. Zero: detected from the *sql.DB's driver
	// (pgx stdlib, go-sql-driver/mysql, modernc.org/sqlite).
	Dialect sqlcc.Dialect
}

// SQLStore keeps claims and outcomes in a table of PostgreSQL, MySQL 8.0.13
// or later, MariaDB 10.2 or later (the table has an expression default) or
// SQLite 3.42 or later (unixepoch('subsec')). It is safe for
// concurrent use by many goroutines and processes sharing the database. The
// table is created by [SQLStore.CreateTable] or by the statements of
// [Schema] in your migrations, never implicitly; expired records are removed
// by [SQLStore.Purge], which the application calls periodically.
//
// A claim inserts the key's row with sqlcc.CreateOrGet (so that of many
// concurrent first callers exactly one inserts it) or takes an expired row
// over with a conditional UPDATE that increments the token. Lease expiry is
// judged by the database's clock: the row holds claimed_at (set by the
// database, in milliseconds) and lease_ms. Extend, Complete and Release are
// single UPDATEs conditioned on the row being in flight with the caller's
// owner and token, so the write that stores the outcome is fenced in the
// same statement.
//
// On SQLite open the database with a busy_timeout (and preferably WAL).
type SQLStore struct {
	db     *sql.DB
	d      sqlcc.Dialect
	table  sqlcc.Table
	raw    string // unquoted table name
	quoted string
	q      sqlQueries
}

type sqlQueries struct {
	takeover, extend, complete, release, purge string
}

var _ Store = (*SQLStore)(nil)

// NewSQLStore returns a store on db. It returns an error matching
// [ErrInvalidOptions] for a nil db, an invalid table name or an undetectable
// dialect. It does no I/O.
func NewSQLStore(db *sql.DB, opts SQLOptions) (*SQLStore, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: nil db", ErrInvalidOptions)
	}
	name := opts.Table
	if name == "" {
		name = DefaultTable
	}
	d := opts.Dialect
	if d == sqlcc.Unknown {
		var err error
		if d, err = sqlcc.DetectDialect(db); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
	}
	t, err := sqlcc.QuoteIdentifier(d, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	now := nowMS(d)
	s := &SQLStore{db: db, d: d, table: sqlcc.Table{Dialect: d, Name: name}, raw: name, quoted: t}
	const mine = " WHERE id = ? AND token = ? AND owner = ? AND state = 0"
	s.q = sqlQueries{
		takeover: d.Rebind("UPDATE " + t + " SET token = token + 1, owner = ?, fingerprint = ?, state = 0, claimed_at = " + now +
			", lease_ms = ?, retention_ms = ?, expires_at = NULL, outcome = NULL" +
			" WHERE id = ? AND token = ? AND ((state = 0 AND fingerprint = ? AND claimed_at + lease_ms <= " + now +
			") OR (state = 1 AND expires_at <= " + now + "))"),
		extend:   d.Rebind("UPDATE " + t + " SET claimed_at = " + now + ", lease_ms = ?" + mine),
		complete: d.Rebind("UPDATE " + t + " SET state = 1, outcome = ?, expires_at = " + now + " + ?" + mine),
		release:  d.Rebind("UPDATE " + t + " SET lease_ms = 0, claimed_at = 0" + mine),
		purge: "DELETE FROM " + t + " WHERE (state = 1 AND expires_at <= " + now +
			") OR (state = 0 AND claimed_at + lease_ms + retention_ms <= " + now + ")",
	}
	return s, nil
}

// nowMS is the dialect's expression for the database clock's time in
// milliseconds since the Unix epoch.
func nowMS(d sqlcc.Dialect) string {
	switch d {
	case sqlcc.Postgres:
		return "(CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))"
	case sqlcc.MySQL:
		return "(CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED))"
	default:
		return "(CAST(unixepoch('subsec') * 1000 AS INTEGER))"
	}
}

// Schema returns the statements that create the table of a [SQLStore] with
// the given dialect and name (empty: [DefaultTable]), for migrations. The
// columns:
//
//	id           the key (primary key; compared byte for byte)
//	fingerprint  the fingerprint of the first request
//	state        0 in flight, 1 done
//	token        the fencing token of the current claim
//	owner        the random value of the current claim's owner
//	claimed_at   when the lease was last granted or extended, ms since the epoch, database clock
//	lease_ms     the lease's length
//	retention_ms how long the record is kept after it ends
//	expires_at   done: when the outcome expires (ms since the epoch); NULL in flight
//	outcome      the stored value
func Schema(d sqlcc.Dialect, table string) ([]string, error) {
	if table == "" {
		table = DefaultTable
	}
	t, err := sqlcc.QuoteIdentifier(d, table)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	ix, err := sqlcc.QuoteIdentifier(d, table+"_expiry")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
	}
	str, blob, big := "TEXT", "BLOB", "BIGINT"
	switch d {
	case sqlcc.Postgres:
		blob = "BYTEA"
	case sqlcc.MySQL:
		// VARBINARY: keys compare byte for byte (no case folding, no pad).
		str, blob = "VARBINARY(255)", "LONGBLOB"
	case sqlcc.SQLite:
		big = "INTEGER"
	}
	return []string{
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	id %s NOT NULL PRIMARY KEY,
	fingerprint %s NOT NULL,
	state SMALLINT NOT NULL,
	token %s NOT NULL,
	owner %s NOT NULL,
	claimed_at %s NOT NULL DEFAULT %s,
	lease_ms %s NOT NULL,
	retention_ms %s NOT NULL,
	expires_at %s,
	outcome %s
)`, t, str, str, big, str, big, nowMS(d), big, big, big, blob),
		fmt.Sprintf("CREATE INDEX %s ON %s (expires_at)", ix, t),
	}, nil
}

// CreateTable creates the store's table and index if they do not exist. It
// is safe to call at every start.
func (s *SQLStore) CreateTable(ctx context.Context) error {
	stmts, err := Schema(s.d, s.raw)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, stmts[0]); err != nil {
		return fmt.Errorf("idempotency: create table %s: %w", s.raw, err)
	}
	// CREATE INDEX IF NOT EXISTS is not MySQL syntax: create the index
	// together with the table's first creation only.
	var n int
	var q string
	switch s.d {
	case sqlcc.Postgres:
		q = "SELECT COUNT(*) FROM pg_indexes WHERE tablename = $1 AND indexname = $2"
	case sqlcc.MySQL:
		q = "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?"
	default:
		q = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name = ?"
	}
	if err := s.db.QueryRowContext(ctx, q, s.raw, s.raw+"_expiry").Scan(&n); err != nil {
		return fmt.Errorf("idempotency: look up index of %s: %w", s.raw, err)
	}
	if n > 0 {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, stmts[1]); err != nil && !sqlcc.IsUniqueViolation(err) {
		// Two processes creating the index at once: the loser's error is
		// harmless if the index now exists.
		if err2 := s.db.QueryRowContext(ctx, q, s.raw, s.raw+"_expiry").Scan(&n); err2 != nil || n == 0 {
			return fmt.Errorf("idempotency: create index on %s: %w", s.raw, err)
		}
	}
	return nil
}

// Claim implements [Store].
func (s *SQLStore) Claim(ctx context.Context, req ClaimRequest) (Record, error) {
	for range 3 {
		var (
			fp, owner string
			state     int
			token     int64
			expires   sql.NullInt64
			outcome   []byte
		)
		created, err := sqlcc.CreateOrGet(ctx, s.db, sqlcc.Row{
			Table:  s.table,
			Unique: []string{"id"},
			Values: []sqlcc.Assignment{
				sqlcc.Set("id", req.Key), sqlcc.Set("fingerprint", req.Fingerprint), sqlcc.Set("state", 0),
				sqlcc.Set("token", 1), sqlcc.Set("owner", req.Owner),
				sqlcc.Set("lease_ms", req.Lease.Milliseconds()), sqlcc.Set("retention_ms", req.Retention.Milliseconds()),
			},
			Returning: []string{"fingerprint", "state", "token", "owner", "expires_at", "outcome"},
		}, &fp, &state, &token, &owner, &expires, &outcome)
		if err != nil {
			return Record{}, err
		}
		if created {
			return Record{State: Claimed, Token: 1}, nil
		}
		if state == 1 && (!expires.Valid || expires.Int64 > time.Now().UnixMilli()) {
			return Record{State: Done, Fingerprint: fp, Token: uint64(token), Value: nonNil(outcome)}, nil
		}
		if state == 0 && fp != req.Fingerprint {
			return Record{State: InFlight, Fingerprint: fp, Token: uint64(token)}, nil
		}
		// In flight with our fingerprint, or done and past retention by
		// our clock: take it over if the database's clock agrees.
		res, err := s.db.ExecContext(ctx, s.q.takeover, req.Owner, req.Fingerprint,
			req.Lease.Milliseconds(), req.Retention.Milliseconds(), req.Key, token, req.Fingerprint)
		if err != nil {
			return Record{}, fmt.Errorf("take over %s: %w", s.raw, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return Record{}, fmt.Errorf("take over %s: %w", s.raw, err)
		}
		if n == 1 {
			return Record{State: Claimed, Token: uint64(token) + 1}, nil
		}
		if state == 0 {
			return Record{State: InFlight, Fingerprint: fp, Token: uint64(token)}, nil
		}
		// The expired outcome was taken over or purged meanwhile: look
		// again.
	}
	return Record{}, fmt.Errorf("%s: key %q changed on every attempt", s.raw, req.Key)
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Extend implements [Store].
func (s *SQLStore) Extend(ctx context.Context, key, owner string, token uint64, lease time.Duration) error {
	return s.fenced(ctx, "extend", s.q.extend, lease.Milliseconds(), key, int64(token), owner)
}

// Complete implements [Store].
func (s *SQLStore) Complete(ctx context.Context, key, owner string, token uint64, value []byte, retention time.Duration) error {
	return s.fenced(ctx, "complete", s.q.complete, value, retention.Milliseconds(), key, int64(token), owner)
}

// Release implements [Store].
func (s *SQLStore) Release(ctx context.Context, key, owner string, token uint64) error {
	return s.fenced(ctx, "release", s.q.release, key, int64(token), owner)
}

func (s *SQLStore) fenced(ctx context.Context, op, q string, args ...any) error {
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("idempotency: %s on %s: %w", op, s.raw, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("idempotency: %s on %s: %w", op, s.raw, err)
	}
	if n > 0 {
		return nil
	}
	if s.d == sqlcc.MySQL {
		// MySQL counts changed rows, not matched ones: an extension within
		// the same millisecond changes nothing. Ask whether the claim holds.
		var held int
		err := s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+s.quoted+" WHERE id = ? AND token = ? AND owner = ? AND state = 0",
			args[len(args)-3:]...).Scan(&held)
		if err != nil {
			return fmt.Errorf("idempotency: %s on %s: %w", op, s.raw, err)
		}
		if held > 0 {
			return nil
		}
	}
	return ErrLeaseLost
}

// Purge deletes the records whose retention has passed: outcomes stored
// longer ago than their retention, and claims whose lease ended longer ago
// than the retention (abandoned in flight). It returns how many it deleted.
// Call it periodically (an hourly job is plenty); until a record is purged,
// a done record past its retention is no longer replayed, and its key is
// taken over by the next caller. Purge is safe to run concurrently with
// everything else.
func (s *SQLStore) Purge(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, s.q.purge)
	if err != nil {
		return 0, fmt.Errorf("idempotency: purge %s: %w", s.raw, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("idempotency: purge %s: %w", s.raw, err)
	}
	return n, nil
}
