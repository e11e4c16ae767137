package sqlcc

import (
	"errors"
	"reflect"
	"strconv"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
)

// Class is the kind of database error, independent of the engine.
type Class int

const (
	// ClassOther is any error sqlcc does not classify, including nil.
	ClassOther Class = iota
	// ClassUniqueViolation is a duplicate value in a unique or primary key.
	ClassUniqueViolation
	// ClassDeadlock is a deadlock the engine broke by failing this transaction.
	ClassDeadlock
	// ClassSerializationFailure is a write or read that conflicts with a
	// concurrent transaction's snapshot.
	ClassSerializationFailure
	// ClassLockTimeout is a row lock that was not granted: the lock wait
	// timed out, or NOWAIT found the row locked.
	ClassLockTimeout
	// ClassBusy is SQLite's database-level lock not granted within
	// busy_timeout (SQLITE_BUSY, SQLITE_LOCKED).
	ClassBusy
)

// String returns the class name.
func (c Class) String() string {
	switch c {
	case ClassUniqueViolation:
		return "unique_violation"
	case ClassDeadlock:
		return "deadlock"
	case ClassSerializationFailure:
		return "serialization_failure"
	case ClassLockTimeout:
		return "lock_timeout"
	case ClassBusy:
		return "busy"
	default:
		return "other"
	}
}

// Scope says what must be run again after an error.
type Scope int

const (
	// RetryNone: running the same work again will fail the same way (or the
	// error is not classified).
	RetryNone Scope = iota
	// RetryStatement: only the failed statement was rolled back; the
	// transaction is still open and may retry the statement or roll back.
	RetryStatement
	// RetryTransaction: the whole transaction is rolled back (or, on
	// PostgreSQL, aborted and unusable) and must be run again from BEGIN.
	RetryTransaction
)

// String returns the scope name.
func (s Scope) String() string {
	switch s {
	case RetryStatement:
		return "statement"
	case RetryTransaction:
		return "transaction"
	default:
		return "none"
	}
}

// Classification describes a database error. The zero value is "not a
// classified database error".
type Classification struct {
	Class   Class
	Dialect Dialect // engine whose driver produced the error
	// Code is the engine's code: a SQLSTATE on PostgreSQL, an error number on
	// MySQL, an extended result code on SQLite.
	Code string
	// Constraint is the name of the violated constraint where the driver
	// reports it separately (PostgreSQL only); otherwise empty.
	Constraint string
	// Retry says what to run again.
	Retry Scope
}

// Classify finds the first driver error in err's chain (errors.As, so wrapped
// and joined errors classify) and reports its class. It reads only codes from
// the drivers' typed errors (*pgconn.PgError, *mysql.MySQLError and
// modernc.org/sqlite's *sqlite.Error), never message text. See the package
// documentation for the table of codes. Classify is safe for concurrent use.
func Classify(err error) Classification {
	if err == nil {
		return Classification{}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		c := Classification{Dialect: Postgres, Code: pe.Code}
		switch pe.Code {
		case "23505":
			c.Class, c.Constraint = ClassUniqueViolation, pe.ConstraintName
		case "40P01":
			c.Class, c.Retry = ClassDeadlock, RetryTransaction
		case "40001":
			c.Class, c.Retry = ClassSerializationFailure, RetryTransaction
		case "55P03":
			c.Class, c.Retry = ClassLockTimeout, RetryTransaction
		}
		return c
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		c := Classification{Dialect: MySQL, Code: strconv.Itoa(int(me.Number))}
		switch me.Number {
		case 1062, 1586:
			c.Class = ClassUniqueViolation
		case 1213:
			c.Class, c.Retry = ClassDeadlock, RetryTransaction
		case 1020:
			c.Class, c.Retry = ClassSerializationFailure, RetryTransaction
		case 1205, 3572:
			c.Class, c.Retry = ClassLockTimeout, RetryStatement
		}
		return c
	}
	var se sqliteError
	if errors.As(err, &se) && isModernc(se) {
		code := se.Code()
		c := Classification{Dialect: SQLite, Code: strconv.Itoa(code)}
		switch {
		case code == 2067 || code == 1555: // SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY
			c.Class = ClassUniqueViolation
		case code == 517: // SQLITE_BUSY_SNAPSHOT
			c.Class, c.Retry = ClassSerializationFailure, RetryTransaction
		case code&0xff == 5 || code&0xff == 6: // SQLITE_BUSY*, SQLITE_LOCKED*
			c.Class, c.Retry = ClassBusy, RetryTransaction
		}
		return c
	}
	return Classification{}
}

// sqliteError is the method set of modernc.org/sqlite's *sqlite.Error.
// sqlcc matches it by method set and package path rather than importing the
// driver, so that users of PostgreSQL or MySQL do not link SQLite.
type sqliteError interface {
	error
	Code() int
}

func isModernc(e sqliteError) bool {
	t := reflect.TypeOf(e)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.PkgPath() == "modernc.org/sqlite"
}

// IsUniqueViolation reports whether err is a unique or primary key violation.
func IsUniqueViolation(err error) bool { return Classify(err).Class == ClassUniqueViolation }

// IsDeadlock reports whether err is a deadlock detected by the engine.
func IsDeadlock(err error) bool { return Classify(err).Class == ClassDeadlock }

// IsSerializationFailure reports whether err is a serialization failure
// (including SQLite's SQLITE_BUSY_SNAPSHOT).
func IsSerializationFailure(err error) bool {
	return Classify(err).Class == ClassSerializationFailure
}

// IsLockTimeout reports whether err is a row lock not granted: lock wait
// timeout or NOWAIT on a locked row (PostgreSQL, MySQL). On SQLite the same
// situation is [IsBusy].
func IsLockTimeout(err error) bool { return Classify(err).Class == ClassLockTimeout }

// IsBusy reports whether err is SQLite's SQLITE_BUSY or SQLITE_LOCKED
// (any extended code except SQLITE_BUSY_SNAPSHOT).
func IsBusy(err error) bool { return Classify(err).Class == ClassBusy }
