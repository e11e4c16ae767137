package sqlcc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// DB is the part of database/sql that sqlcc needs to run statements.
// *sql.DB, *sql.Tx and *sql.Conn satisfy it. Functions that must run inside a
// transaction take a *sql.Tx instead, so a call outside one does not compile.
type DB interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ DB = (*sql.DB)(nil)
	_ DB = (*sql.Tx)(nil)
	_ DB = (*sql.Conn)(nil)
)

// Dialect names the SQL dialect sqlcc writes. The zero value, [DetectDialect]'s
// "unknown", asks each function to detect the dialect from its DB argument.
type Dialect int

const (
	// Unknown means "detect it": from a *sql.DB or *sql.Conn the driver tells
	// the dialect; a *sql.Tx cannot, so functions given one return
	// [ErrUnknownDialect] unless the dialect is set explicitly.
	Unknown Dialect = iota
	// Postgres is PostgreSQL through github.com/jackc/pgx/v5/stdlib ("pgx").
	Postgres
	// MySQL is MySQL or MariaDB through github.com/go-sql-driver/mysql.
	MySQL
	// SQLite is SQLite through modernc.org/sqlite ("sqlite").
	SQLite
)

// String returns the dialect's name.
func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case MySQL:
		return "mysql"
	case SQLite:
		return "sqlite"
	default:
		return "unknown"
	}
}

// Rebind rewrites the ? placeholders of a constant query to the
// dialect's: $1, $2, … on PostgreSQL; MySQL and SQLite keep ?. The query
// must not contain a ? anywhere else (in a string literal, say). It lets
// one query text serve all three engines.
func (d Dialect) Rebind(query string) string {
	if d != Postgres {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// driverDialects maps a driver's Go package path to its dialect. Only the three
// drivers whose error types [Classify] understands are listed.
var driverDialects = map[string]Dialect{
	"github.com/jackc/pgx/v5/stdlib": Postgres,
	"github.com/go-sql-driver/mysql": MySQL,
	"modernc.org/sqlite":             SQLite,
}

// DetectDialect reports the dialect of db's driver. It works for *sql.DB (from
// its driver) and *sql.Conn (from the driver connection, which it borrows
// briefly); for a *sql.Tx or any other DB it returns [ErrUnknownDialect].
// It is safe for concurrent use and does no I/O.
func DetectDialect(db DB) (Dialect, error) {
	var v any
	switch x := db.(type) {
	case *sql.DB:
		v = x.Driver()
	case *sql.Conn:
		if err := x.Raw(func(dc any) error { v = dc; return nil }); err != nil {
			return Unknown, fmt.Errorf("sqlcc: detect dialect: %w", err)
		}
	default:
		return Unknown, fmt.Errorf("%w: cannot detect the dialect of a %T; set Table.Dialect", ErrUnknownDialect, db)
	}
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil {
		if d, ok := driverDialects[t.PkgPath()]; ok {
			return d, nil
		}
	}
	return Unknown, fmt.Errorf("%w: unsupported driver %T", ErrUnknownDialect, v)
}

func resolveDialect(d Dialect, db DB) (Dialect, error) {
	switch d {
	case Postgres, MySQL, SQLite:
		return d, nil
	case Unknown:
		return DetectDialect(db)
	default:
		return Unknown, fmt.Errorf("%w: invalid dialect %d", ErrUnknownDialect, int(d))
	}
}

// Table describes the table a function works on. The zero value is not
// usable: Name is required. A Table is a plain value, safe to share.
type Table struct {
	// Dialect is the SQL dialect. Zero: detected from the DB argument, which
	// must then be a *sql.DB or *sql.Conn (see [DetectDialect]).
	Dialect Dialect
	// Name is the table name, an identifier (see [ValidIdentifier]). Required.
	Name string
	// Key is the column that identifies a row (primary or unique key).
	// Zero: "id".
	Key string
	// Version is the optimistic-lock version column, an integer.
	// Zero: "version".
	Version string
	// Fence is the column holding the highest fencing token written so far,
	// an integer. Zero: "fence".
	Fence string
}

func (t Table) key() string     { return orDefault(t.Key, "id") }
func (t Table) version() string { return orDefault(t.Version, "version") }
func (t Table) fence() string   { return orDefault(t.Fence, "fence") }

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Assignment is one "column = value" pair of an INSERT or UPDATE. Build it
// with [Set]; the value is always bound as a parameter.
type Assignment struct {
	Column string
	Value  any
}

// Set returns the assignment column = value.
func Set(column string, value any) Assignment { return Assignment{Column: column, Value: value} }

// ValidIdentifier reports whether name may be used as a table or column name:
// an ASCII letter or underscore followed by up to 62 ASCII letters, digits or
// underscores. sqlcc rejects every other name with [ErrInvalidIdentifier]
// before it builds a statement, then quotes the name for the dialect, so names
// are never a path for SQL injection. Quoting keeps the case: on PostgreSQL a
// table created unquoted as Products is named products and must be passed so.
func ValidIdentifier(name string) bool {
	if len(name) == 0 || len(name) > 63 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// QuoteIdentifier validates name (see [ValidIdentifier]) and quotes it for d:
// "name" on PostgreSQL and SQLite, `name` on MySQL.
func QuoteIdentifier(d Dialect, name string) (string, error) {
	if !ValidIdentifier(name) {
		return "", fmt.Errorf("%w: %q", ErrInvalidIdentifier, name)
	}
	switch d {
	case MySQL:
		return "`" + name + "`", nil
	case Postgres, SQLite:
		return `"` + name + `"`, nil
	default:
		return "", fmt.Errorf("%w: invalid dialect %d", ErrUnknownDialect, int(d))
	}
}

// Errors returned by sqlcc. Match them with errors.Is.
var (
	// ErrConflict is matched by a *[ConflictError]: a versioned write found a
	// different version than expected, or no row at all.
	ErrConflict = errors.New("sqlcc: version conflict")
	// ErrStaleToken is matched by a *[StaleTokenError]: a fenced write carried
	// a token older than the one stored.
	ErrStaleToken = errors.New("sqlcc: stale fencing token")
	// ErrNotFound is returned when the row to update does not exist.
	ErrNotFound = errors.New("sqlcc: row not found")
	// ErrOutOfRange is returned by [Add] when the change would take the column
	// below its lower bound; nothing was changed.
	ErrOutOfRange = errors.New("sqlcc: value out of range")
	// ErrCommitUnknown is returned by [RunTx] when COMMIT failed in a way that
	// does not tell whether the transaction committed (typically the
	// connection broke). The function is not run again.
	ErrCommitUnknown = errors.New("sqlcc: commit outcome unknown")
	// ErrNotInTx is returned by a locking function given something that is
	// not a transaction; a row lock outside a transaction would protect
	// nothing.
	ErrNotInTx = errors.New("sqlcc: not in a transaction")
	// ErrInvalidIdentifier is returned when a table or column name fails
	// [ValidIdentifier].
	ErrInvalidIdentifier = errors.New("sqlcc: invalid identifier")
	// ErrUnknownDialect is returned when the dialect is neither set nor
	// detectable.
	ErrUnknownDialect = errors.New("sqlcc: unknown dialect")
	// ErrInvalidOptions is returned when an options struct holds an invalid
	// value (a negative count or duration, an unknown mode).
	ErrInvalidOptions = errors.New("sqlcc: invalid options")
	// ErrVanished is returned by [CreateOrGet] when, on every attempt, the
	// insert hit an existing row that was gone again before it could be read.
	ErrVanished = errors.New("sqlcc: row vanished between insert and read")
)

// ConflictError reports a failed versioned write. It matches [ErrConflict].
type ConflictError struct {
	Table string // table name
	Key   any    // key of the row
	// Expected is the version the caller expected.
	Expected int64
	// Current is the version found after the write failed; zero if Gone.
	Current int64
	// Gone is true when no row with Key exists.
	Gone bool
}

func (e *ConflictError) Error() string {
	if e.Gone {
		return fmt.Sprintf("sqlcc: version conflict on %s %v: row is gone (expected version %d)", e.Table, e.Key, e.Expected)
	}
	return fmt.Sprintf("sqlcc: version conflict on %s %v: expected version %d, current %d", e.Table, e.Key, e.Expected, e.Current)
}

// Is reports whether target is [ErrConflict].
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// StaleTokenError reports a fenced write rejected because the row already
// carries a newer token. It matches [ErrStaleToken].
type StaleTokenError struct {
	Table   string // table name
	Key     any    // key of the row
	Token   uint64 // the token the write carried
	Current uint64 // the token stored in the row
}

func (e *StaleTokenError) Error() string {
	return fmt.Sprintf("sqlcc: stale fencing token on %s %v: token %d, stored %d", e.Table, e.Key, e.Token, e.Current)
}

// Is reports whether target is [ErrStaleToken].
func (e *StaleTokenError) Is(target error) bool { return target == ErrStaleToken }

// stmt builds one statement: identifiers validated and quoted, values bound.
type stmt struct {
	d    Dialect
	sb   strings.Builder
	args []any
	err  error
}

func (s *stmt) raw(parts ...string) *stmt {
	s.grow()
	for _, p := range parts {
		s.sb.WriteString(p)
	}
	return s
}

// ident writes name quoted for the dialect, as [QuoteIdentifier] does,
// without allocating.
func (s *stmt) ident(name string) *stmt {
	if !ValidIdentifier(name) || (s.d != Postgres && s.d != MySQL && s.d != SQLite) {
		if _, err := QuoteIdentifier(s.d, name); s.err == nil {
			s.err = err
		}
		return s
	}
	q := byte('"')
	if s.d == MySQL {
		q = '`'
	}
	s.grow()
	s.sb.WriteByte(q)
	s.sb.WriteString(name)
	s.sb.WriteByte(q)
	return s
}

func (s *stmt) arg(v any) *stmt {
	if s.args == nil {
		s.args = make([]any, 0, 8)
	}
	s.args = append(s.args, v)
	s.grow()
	if s.d == Postgres {
		s.sb.WriteByte('$')
		s.sb.WriteString(strconv.Itoa(len(s.args)))
	} else {
		s.sb.WriteByte('?')
	}
	return s
}

// grow sizes the builder once for a typical statement.
func (s *stmt) grow() {
	if s.sb.Cap() == 0 {
		s.sb.Grow(160)
	}
}

func (s *stmt) String() string { return s.sb.String() }
