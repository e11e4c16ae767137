package sqlstore_test

import (
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/haita/haita/internal/sqlstore"
	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/sqlcc"
)

func TestMain(m *testing.M) { testserver.Main(m) }

func TestNewTable(t *testing.T) {
	long := strings.Repeat("t", 55)
	for _, tc := range []struct {
		name     string
		d        sqlcc.Dialect
		table    string
		suffixes []string
		want     sqlstore.Table
		err      error
	}{
		{name: "default", d: sqlcc.Postgres, want: sqlstore.Table{Dialect: sqlcc.Postgres, Name: "def", Quoted: `"def"`}},
		{name: "given", d: sqlcc.MySQL, table: "jobs", want: sqlstore.Table{Dialect: sqlcc.MySQL, Name: "jobs", Quoted: "`jobs`"}},
		{name: "sqlite", d: sqlcc.SQLite, table: "Jobs", want: sqlstore.Table{Dialect: sqlcc.SQLite, Name: "Jobs", Quoted: `"Jobs"`}},
		{name: "space", d: sqlcc.Postgres, table: "bad name", err: sqlcc.ErrInvalidIdentifier},
		{name: "quote", d: sqlcc.Postgres, table: `x";drop`, err: sqlcc.ErrInvalidIdentifier},
		{name: "64 bytes", d: sqlcc.Postgres, table: strings.Repeat("t", 64), err: sqlcc.ErrInvalidIdentifier},
		{name: "room for suffixes", d: sqlcc.Postgres, table: long[:54], suffixes: []string{"_a", "_ended_at"},
			want: sqlstore.Table{Dialect: sqlcc.Postgres, Name: long[:54], Quoted: `"` + long[:54] + `"`}},
		{name: "no room for a suffix", d: sqlcc.Postgres, table: long, suffixes: []string{"_a", "_ended_at"}, err: sqlcc.ErrInvalidIdentifier},
		{name: "unknown dialect", d: sqlcc.Unknown, table: "jobs", err: sqlcc.ErrUnknownDialect},
		{name: "invalid dialect", d: 9, table: "jobs", err: sqlcc.ErrUnknownDialect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sqlstore.NewTable(tc.d, tc.table, "def", tc.suffixes...)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("error %v, want one matching %v", err, tc.err)
				}
				if tc.table != "" && !strings.Contains(err.Error(), strconv.Quote(tc.table)) {
					t.Errorf("error %q does not name the table %q", err, tc.table)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	tb, err := sqlstore.NewTable(sqlcc.MySQL, "co", "", "_ended")
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.Quote("_ended"); got != "`co_ended`" {
		t.Errorf("Quote: %s", got)
	}
}

func TestOpen(t *testing.T) {
	open := func(driver, dsn string) *sql.DB {
		db, err := sql.Open(driver, dsn) // connects on first use only: none here
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	pg := open("pgx", "postgres://u@127.0.0.1:1/db")
	my := open("mysql", "u@tcp(127.0.0.1:1)/db")
	lite := open("sqlite", "file::memory:")
	for _, tc := range []struct {
		name  string
		db    *sql.DB
		d     sqlcc.Dialect
		table string
		want  sqlcc.Dialect
		err   error
	}{
		{name: "postgres detected", db: pg, want: sqlcc.Postgres},
		{name: "mysql detected", db: my, want: sqlcc.MySQL},
		{name: "sqlite detected", db: lite, want: sqlcc.SQLite},
		{name: "dialect given", db: lite, d: sqlcc.Postgres, want: sqlcc.Postgres},
		{name: "bad table", db: lite, table: "a-b", err: sqlcc.ErrInvalidIdentifier},
		{name: "invalid dialect", db: lite, d: 9, err: sqlcc.ErrUnknownDialect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := sqlstore.Open(tc.db, tc.d, tc.table, "def")
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("error %v, want one matching %v", err, tc.err)
				}
				return
			}
			if err != nil || st.DB != tc.db || st.Dialect != tc.want || st.Name != "def" {
				t.Fatalf("got %+v, %v; want dialect %v, table def", st, err, tc.want)
			}
		})
	}
	if _, err := sqlstore.Open(nil, sqlcc.Postgres, "", "def"); err == nil || !strings.Contains(err.Error(), "nil db") {
		t.Errorf("nil db: %v", err)
	}
}
