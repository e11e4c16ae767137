// Package sqlstore checks what a SQL store built on package sqlcc is given: the database, its
// dialect and the store's table name. checkout's SQLStore and singleton's SQLMarkers resolve
// their options with it, so that both accept and refuse the same things with the same messages.
//
// Errors name what is wrong and match no sentinel of their own beyond sqlcc's
// ([sqlcc.ErrInvalidIdentifier], [sqlcc.ErrUnknownDialect]); a store wraps them in its
// package's ErrInvalid.
package sqlstore

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/haita/haita/sqlcc"
)

// Table is a store's table name, checked for a dialect. Its zero value is not usable: make it
// with [NewTable] or [Open]. It is a plain value, safe to share.
type Table struct {
	// Dialect is the dialect the name was checked and is quoted for.
	Dialect sqlcc.Dialect
	// Name is the table name as given, or the default.
	Name string
	// Quoted is Name quoted for Dialect.
	Quoted string
}

// NewTable checks table name for dialect d. An empty name selects def. The name, and the name
// followed by each of suffixes (the store's other tables and its indexes, all named after it),
// must satisfy [sqlcc.ValidIdentifier]: a store that names an index name+"_ended_at" passes
// that suffix, so a name too long for the index is refused here and not when the index is
// created. d must be a known dialect.
func NewTable(d sqlcc.Dialect, name, def string, suffixes ...string) (Table, error) {
	if name == "" {
		name = def
	}
	q, err := sqlcc.QuoteIdentifier(d, name)
	if err != nil {
		return Table{}, fmt.Errorf("table name %q: %w", name, err)
	}
	for _, s := range suffixes {
		if !sqlcc.ValidIdentifier(name + s) {
			return Table{}, fmt.Errorf("table name %q: %w: %q, named after it, would be longer than 63 bytes",
				name, sqlcc.ErrInvalidIdentifier, name+s)
		}
	}
	return Table{Dialect: d, Name: name, Quoted: q}, nil
}

// Quote returns the name of a table or index named after t, Name followed by suffix, quoted
// for t's dialect. The suffix must be one that [NewTable] checked: for another, Quote returns
// "" when the name it makes is not a valid identifier.
func (t Table) Quote(suffix string) string {
	q, _ := sqlcc.QuoteIdentifier(t.Dialect, t.Name+suffix)
	return q
}

// Store is what a SQL store's constructor resolves from its arguments.
type Store struct {
	// DB is the database, never nil.
	DB *sql.DB
	// Table is the store's table, checked and quoted for the database's dialect.
	Table
}

// Open checks a store's constructor arguments: db must not be nil; the dialect is d, or when d
// is [sqlcc.Unknown] the one [sqlcc.DetectDialect] finds for db's driver; the table name is
// checked as [NewTable] does. It does no I/O.
func Open(db *sql.DB, d sqlcc.Dialect, name, def string, suffixes ...string) (Store, error) {
	if db == nil {
		return Store{}, errors.New("nil db")
	}
	if d == sqlcc.Unknown {
		var err error
		if d, err = sqlcc.DetectDialect(db); err != nil {
			return Store{}, err
		}
	}
	t, err := NewTable(d, name, def, suffixes...)
	if err != nil {
		return Store{}, err
	}
	return Store{DB: db, Table: t}, nil
}
