package singleton

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/haita/haita/internal/sqlstore"
	"github.com/haita/haita/sqlcc"
)

// State is a slot marker's state.
type State string

// Marker states.
const (
	StateStarted State = "started" // claimed; the run has not recorded an outcome
	StateDone    State = "done"    // fn returned nil
	StateFailed  State = "failed"  // fn returned an error
)

// Mark identifies one claim of a slot.
type Mark struct {
	Job, Slot string
	Holder    string    // the Runner's Options.Holder
	RunID     string    // random per claim
	Fence     uint64    // the lease's fencing token; zero when the backend has none
	At        time.Time // when the claim (Begin) or the outcome (Finish) happened
}

// Markers keeps durable per-(job, slot) markers. Methods must be atomic
// across every process sharing the store and safe for concurrent use.
// [SQLMarkers] implements it.
type Markers interface {
	// Begin claims m.Slot of m.Job for m.RunID and returns the attempt
	// number (1 for the first run). A slot that completed returns a
	// *DoneError. A slot left started is taken over unless its fence is
	// not below m.Fence (a later holder claimed it: *RunningError).
	Begin(ctx context.Context, m Mark) (attempt int, err error)
	// Finish records the outcome of m's run (runErr nil: done, else
	// failed) if m.RunID still holds the claim, else returns
	// ErrSuperseded.
	Finish(ctx context.Context, m Mark, runErr error) error
}

// DefaultTable is the marker table's name when MarkerOptions.Table is empty.
const DefaultTable = "haita_singleton_runs"

// MarkerOptions configure [SQLMarkers]. The zero value is valid.
type MarkerOptions struct {
	// Table is the marker table. Zero selects [DefaultTable]. Must satisfy
	// sqlcc.ValidIdentifier.
	Table string
	// Dialect is the SQL dialect. Zero: detected from the *sql.DB.
	Dialect sqlcc.Dialect
}

// SQLMarkers keeps slot markers in PostgreSQL, MySQL/MariaDB or SQLite: one
// row per (job, slot) under a unique key, so only one claim can create it.
// It is safe for concurrent use by many processes. Create the table with
// [SQLMarkers.CreateTable] or [MarkerSchema]. On SQLite open the database
// with "_txlock=immediate" and a busy_timeout.
type SQLMarkers struct {
	db    *sql.DB
	d     sqlcc.Dialect
	table string // quoted
	raw   string
}

var _ Markers = (*SQLMarkers)(nil)

// NewSQLMarkers returns markers on db. It returns an error matching
// [ErrInvalid] for a nil db, a bad table name or an undetectable dialect.
func NewSQLMarkers(db *sql.DB, opts MarkerOptions) (*SQLMarkers, error) {
	st, err := sqlstore.Open(db, opts.Dialect, opts.Table, DefaultTable)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return &SQLMarkers{db: db, d: st.Dialect, table: st.Quoted, raw: st.Name}, nil
}

// MarkerSchema returns the statement that creates the marker table
// (idempotent) for dialect. An empty table selects [DefaultTable].
func MarkerSchema(dialect sqlcc.Dialect, table string) (string, error) {
	t, err := sqlstore.NewTable(dialect, table, DefaultTable)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	q := t.Quoted
	text := "TEXT"
	if dialect == sqlcc.MySQL {
		text = "VARCHAR(2000)"
	}
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
	job         VARCHAR(200) NOT NULL,
	slot        VARCHAR(100) NOT NULL,
	state       VARCHAR(16)  NOT NULL,
	holder      VARCHAR(256) NOT NULL,
	run_id      VARCHAR(32)  NOT NULL,
	fence       BIGINT       NOT NULL,
	attempts    INTEGER      NOT NULL,
	started_ns  BIGINT       NOT NULL,
	finished_ns BIGINT       NOT NULL,
	error       %s NOT NULL,
	PRIMARY KEY (job, slot)
)`, q, text), nil
}

// CreateTable creates the marker table if it does not exist.
func (s *SQLMarkers) CreateTable(ctx context.Context) error {
	ddl, err := MarkerSchema(s.d, s.raw)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("singleton: create table: %w", err)
	}
	return nil
}

func (s *SQLMarkers) q(query string) string {
	return s.d.Rebind(query)
}

// Begin implements [Markers].
func (s *SQLMarkers) Begin(ctx context.Context, m Mark) (int, error) {
	attempt := 0
	err := sqlcc.RunTx(ctx, s.db, sqlcc.TxOptions{}, func(ctx context.Context, tx *sql.Tx) error {
		ins := "INSERT INTO " + s.table + " (job, slot, state, holder, run_id, fence, attempts, started_ns, finished_ns, error) VALUES (?, ?, 'started', ?, ?, ?, 1, ?, 0, '')"
		if s.d == sqlcc.MySQL {
			ins += " ON DUPLICATE KEY UPDATE job = job"
		} else {
			ins += " ON CONFLICT DO NOTHING"
		}
		res, err := tx.ExecContext(ctx, s.q(ins), m.Job, m.Slot, m.Holder, m.RunID, int64(m.Fence), m.At.UnixNano())
		if err != nil {
			return fmt.Errorf("singleton: claim slot: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("singleton: claim slot: %w", err)
		} else if n == 1 {
			attempt = 1
			return nil
		}
		sel := "SELECT state, holder, run_id, fence, attempts, finished_ns, error FROM " + s.table + " WHERE job = ? AND slot = ?"
		if s.d != sqlcc.SQLite {
			sel += " FOR UPDATE" // SQLite: the INSERT above took the database write lock
		}
		var (
			state, holder, runID, errText string
			fence, finished               int64
			attempts                      int
		)
		if err := tx.QueryRowContext(ctx, s.q(sel), m.Job, m.Slot).Scan(&state, &holder, &runID, &fence, &attempts, &finished, &errText); err != nil {
			return fmt.Errorf("singleton: read slot: %w", err)
		}
		switch {
		case runID == m.RunID:
			attempt = attempts
			return nil
		case State(state) != StateStarted:
			return &DoneError{Job: m.Job, Slot: m.Slot, State: State(state), By: holder, At: time.Unix(0, finished).UTC(), Err: errText}
		case m.Fence != 0 && uint64(fence) >= m.Fence:
			return &RunningError{Job: m.Job, Holder: holder}
		}
		attempt = attempts + 1
		_, err = tx.ExecContext(ctx, s.q("UPDATE "+s.table+" SET holder = ?, run_id = ?, fence = ?, attempts = ?, started_ns = ? WHERE job = ? AND slot = ?"),
			m.Holder, m.RunID, int64(m.Fence), attempt, m.At.UnixNano(), m.Job, m.Slot)
		if err != nil {
			return fmt.Errorf("singleton: take over slot: %w", err)
		}
		return nil
	})
	return attempt, err
}

// Finish implements [Markers].
func (s *SQLMarkers) Finish(ctx context.Context, m Mark, runErr error) error {
	state, text := StateDone, ""
	if runErr != nil {
		state, text = StateFailed, runErr.Error()
		if len(text) > 2000 {
			text = text[:2000]
		}
		text = strings.ToValidUTF8(text, "?")
	}
	res, err := s.db.ExecContext(ctx, s.q("UPDATE "+s.table+" SET state = ?, finished_ns = ?, error = ? WHERE job = ? AND slot = ? AND run_id = ? AND state = 'started'"),
		string(state), m.At.UnixNano(), text, m.Job, m.Slot, m.RunID)
	if err != nil {
		return fmt.Errorf("singleton: record outcome: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("singleton: record outcome: %w", err)
	} else if n == 0 {
		return fmt.Errorf("%w: job %q slot %q", ErrSuperseded, m.Job, m.Slot)
	}
	return nil
}

// Get returns the marker of (job, slot): its state, holder, attempts and,
// once completed, the finish time and error text. ok is false when the slot
// never started.
func (s *SQLMarkers) Get(ctx context.Context, job, slot string) (r Record, ok bool, err error) {
	var started, finished int64
	err = s.db.QueryRowContext(ctx, s.q("SELECT state, holder, attempts, started_ns, finished_ns, error FROM "+s.table+" WHERE job = ? AND slot = ?"), job, slot).
		Scan(&r.State, &r.Holder, &r.Attempts, &started, &finished, &r.Err)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("singleton: get marker: %w", err)
	}
	r.Job, r.Slot = job, slot
	r.Started = time.Unix(0, started).UTC()
	if finished != 0 {
		r.Finished = time.Unix(0, finished).UTC()
	}
	return r, true, nil
}

// Record is a slot marker as [SQLMarkers.Get] returns it.
type Record struct {
	Job, Slot string
	State     State
	Holder    string // the holder of the last claim
	Attempts  int    // how many runners claimed the slot (more than 1 after a takeover)
	Started   time.Time
	Finished  time.Time // zero while started
	Err       string    // a failed run's error text
}
