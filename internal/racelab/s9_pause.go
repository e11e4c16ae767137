package racelab

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/sqlcc"
)

// pauseTTL is the short lease TTL of scenario 9 (etcd's minimum is 1s).
const pauseTTL = 300 * time.Millisecond

// pauseScenario is the race the seeds leave open: a lock holder paused past
// its TTL (a GC pause, a stopped VM; here SIGSTOP) writes after the next
// holder. The holder checked its lease just before the pause, so the check
// passed. Without fencing its write overwrites the newer one; with fencing
// (sqlcc.FencedUpdate and the lease's token) it is rejected.
func pauseScenario() *Scenario {
	return &Scenario{
		ID: 9, Name: "paused-holder", Title: "Lock holder paused past its TTL (SIGSTOP) writes after the next holder",
		Seeds: "fencing", Unit: "stale writes", Workers: 1, Ops: 3,
		cases: func(e *env) []Case {
			var cs []Case
			for _, en := range []string{SQLite, Redis, Redlock, Postgres, MySQL, Etcd} {
				name := lockBackendName(en)
				if en == SQLite {
					name = "SQLite lease"
				}
				cs = append(cs,
					Case{Variant: name + ", unfenced write", Kind: Broken, Engine: en, Processes: true, run: paused(false)},
					Case{Variant: name + ", fenced write", Kind: Fixed, Engine: en, Processes: true, run: paused(true)},
				)
			}
			return cs
		},
	}
}

func (s lockSpec) ttl() time.Duration {
	if s.Engine == Etcd {
		return time.Second
	}
	return pauseTTL
}

// leaser is a TTL lease on some engine: a lock.Locker, or the lab's SQLite
// lease table.
type leaser struct {
	l  lock.Locker
	db *sql.DB
}

// held is one lease.
type held struct {
	le    *lock.Lease
	owner string
	token uint64
}

func openLeaser(ctx context.Context, s lockSpec, dbPath string) (*leaser, func(), error) {
	if s.Engine == SQLite {
		db, err := sql.Open("sqlite", sqliteDSN(dbPath))
		if err != nil {
			return nil, nil, err
		}
		return &leaser{db: db}, func() { db.Close() }, nil
	}
	s.TTL = s.ttl()
	l, closeFn, err := openLocker(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	return &leaser{l: l}, closeFn, nil
}

// acquireAttempts bounds the attempts of leaser.acquire.
const acquireAttempts = 20

// acquire waits for the lease on key. On a loaded machine a short TTL can
// run out while the grant is on its way: a Locker then gives the grant back
// and reports ErrLost (granted after its local deadline) or ErrIndeterminate
// (a Redlock quorum whose instances answered too late); nobody holds the
// lease, so acquire tries again. The scenario is about a holder paused after
// a valid grant, not about how a grant is obtained.
func (ls *leaser) acquire(ctx context.Context, key string, ttl time.Duration) (*held, error) {
	if ls.l != nil {
		for attempt := 1; ; attempt++ {
			le, err := ls.l.Acquire(ctx, key)
			if err == nil {
				return &held{le: le, token: uint64(le.Token())}, nil
			}
			if attempt == acquireAttempts || ctx.Err() != nil || !(errors.Is(err, lock.ErrLost) || errors.Is(err, lock.ErrIndeterminate)) {
				return nil, err
			}
		}
	}
	owner := lock.NewOwner().String()
	for {
		var tok int64
		err := sqlcc.RunTx(ctx, ls.db, txOpts, func(ctx context.Context, tx *sql.Tx) error {
			now := time.Now().UnixMilli()
			var exp int64
			err := tx.QueryRowContext(ctx, "SELECT expires_ms, token FROM leases WHERE key = ?", key).Scan(&exp, &tok)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				tok = 1
				_, err = tx.ExecContext(ctx, "INSERT INTO leases (key, owner, token, expires_ms) VALUES (?, ?, ?, ?)", key, owner, tok, now+ttl.Milliseconds())
				return err
			case err != nil:
				return err
			case exp > now:
				return lock.ErrNotAcquired
			}
			tok++
			_, err = tx.ExecContext(ctx, "UPDATE leases SET owner = ?, token = ?, expires_ms = ? WHERE key = ?", owner, tok, now+ttl.Milliseconds(), key)
			return err
		})
		if err == nil {
			return &held{owner: owner, token: uint64(tok)}, nil
		}
		if !errors.Is(err, lock.ErrNotAcquired) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// valid reports whether h still holds its lease (the check a careful holder
// makes before it writes).
func (ls *leaser) valid(ctx context.Context, key string, h *held) bool {
	if h.le != nil {
		return h.le.Err() == nil
	}
	var owner string
	var exp int64
	err := ls.db.QueryRowContext(ctx, "SELECT owner, expires_ms FROM leases WHERE key = ?", key).Scan(&owner, &exp)
	return err == nil && owner == h.owner && exp > time.Now().UnixMilli()
}

func (ls *leaser) release(ctx context.Context, key string, h *held) {
	if h.le != nil {
		_ = h.le.Release(ctx)
		return
	}
	_, _ = ls.db.ExecContext(ctx, "UPDATE leases SET expires_ms = 0 WHERE key = ? AND owner = ?", key, h.owner)
}

// writeLedger stores value in the ledger row of the lock key, fenced by h's
// token or not. Each key guards a row of its own: tokens are comparable only
// between holders of one key.
func writeLedger(ctx context.Context, db *sql.DB, key string, h *held, value string, fence bool) error {
	if fence {
		return sqlcc.FencedUpdate(ctx, db, sqlcc.Table{Dialect: sqlcc.SQLite, Name: "ledger", Key: "lock_key"}, key, h.token, sqlcc.Set("value", value))
	}
	_, err := db.ExecContext(ctx, "UPDATE ledger SET value = ? WHERE lock_key = ?", value, key)
	return err
}

func paused(fence bool) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		dbPath := filepath.Join(rc.env.dir, fmt.Sprintf("case-%d.db", rc.index))
		db, err := sql.Open("sqlite", sqliteDSN(dbPath))
		if err != nil {
			return 0, "", err
		}
		rc.onClose(func() { db.Close() })
		for _, q := range []string{
			"CREATE TABLE ledger (lock_key TEXT PRIMARY KEY, value TEXT NOT NULL, fence BIGINT)",
			"CREATE TABLE leases (key TEXT PRIMARY KEY, owner TEXT NOT NULL, token BIGINT NOT NULL, expires_ms BIGINT NOT NULL)",
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return 0, "", err
			}
		}
		spec := rc.env.lockSpec(rc.engineOf())
		ls, closeFn, err := openLeaser(ctx, spec, dbPath)
		if err != nil {
			return 0, "", err
		}
		rc.onClose(closeFn)
		ttl := spec.ttl()
		args := append(spec.args(), "--db", dbPath, "--ttl", ttl.String(), fmt.Sprintf("--fence=%t", fence))
		var stale, rejected int64
		for round := range rc.ops {
			if rc.expired() {
				break
			}
			key := rc.key(fmt.Sprintf("ledger-%d", round))
			o := &op{start: time.Now()}
			v, rej, err := pauseRound(ctx, rc, ls, db, key, ttl, fence, append(args, "--key", key), o)
			if err != nil {
				return stale, "", err
			}
			stale += v
			rejected += rej
			rc.stats.record(o)
		}
		detail := fmt.Sprintf("lease TTL %v; holder stopped with SIGSTOP for TTL+100ms after its last check; %d stale writes landed, %d rejected by the fence", ttl, stale, rejected)
		return stale, detail, nil
	}
}

// pauseRound is one round: the child takes the lease and checks it, is
// stopped, the parent takes the lease after expiry and writes, the child is
// continued and writes.
func pauseRound(ctx context.Context, rc *runCtx, ls *leaser, db *sql.DB, key string, ttl time.Duration, fence bool, args []string, o *op) (stale, rejected int64, err error) {
	if _, err := db.ExecContext(ctx, "INSERT INTO ledger (lock_key, value) VALUES (?, 'initial')", key); err != nil {
		return 0, 0, err
	}
	p, err := rc.start(ctx, "pause", args)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		if err != nil {
			_ = p.cmd.Process.Kill()
		}
		if werr := p.wait(); err == nil {
			err = werr
		}
	}()
	line, err := p.expect(ctx, "CHECKED", 30*time.Second)
	if err != nil {
		return 0, 0, err
	}
	childTok, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CHECKED")), 10, 64)
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return 0, 0, err
	}
	time.Sleep(ttl + 100*time.Millisecond)
	h, err := ls.acquire(ctx, key, ttl)
	if err != nil {
		return 0, 0, fmt.Errorf("racelab: parent acquire: %w", err)
	}
	o.attempt()
	if h.token <= childTok {
		return 0, 0, fmt.Errorf("racelab: token %d after %d", h.token, childTok)
	}
	if err := writeLedger(ctx, db, key, h, "parent", fence); err != nil {
		return 0, 0, fmt.Errorf("racelab: parent write: %w", err)
	}
	ls.release(ctx, key, h)
	if err := p.send("GO"); err != nil {
		return 0, 0, err
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return 0, 0, err
	}
	res, err := p.expect(ctx, "WROTE", 30*time.Second)
	if err != nil {
		return 0, 0, err
	}
	var value string
	if err := db.QueryRowContext(ctx, "SELECT value FROM ledger WHERE lock_key = ?", key).Scan(&value); err != nil {
		return 0, 0, err
	}
	if value != "parent" {
		stale = 1
	}
	if strings.Contains(res, "rejected") {
		rejected = 1
	}
	return stale, rejected, nil
}

// pauseWorker is the child of scenario 9.
func pauseWorker(ctx context.Context, w *worker) error {
	key := w.key
	if key == "" {
		return errors.New("racelab: pause worker needs --key")
	}
	ls, closeFn, err := openLeaser(ctx, w.spec, w.db)
	if err != nil {
		return err
	}
	defer closeFn()
	db, err := sql.Open("sqlite", sqliteDSN(w.db))
	if err != nil {
		return err
	}
	defer db.Close()
	// A grant with little validity left can end before the check on a
	// loaded machine: give it back and take the lease again, so that the
	// check below passes, as it does for the holder in the story.
	var h *held
	for attempt := 1; ; attempt++ {
		h, err = ls.acquire(ctx, key, w.spec.ttl())
		if err != nil {
			return err
		}
		if ls.valid(ctx, key, h) {
			break
		}
		ls.release(ctx, key, h)
		if attempt == acquireAttempts {
			return errors.New("racelab: lease invalid right after acquire, every time")
		}
	}
	// The check passed; the pause lands between it and the write.
	fmt.Fprintf(w.out, "CHECKED %d\n", h.token)
	if _, err := w.in.ReadString('\n'); err != nil {
		return err
	}
	err = writeLedger(ctx, db, key, h, "paused-holder", w.fence)
	switch {
	case errors.Is(err, sqlcc.ErrStaleToken):
		fmt.Fprintln(w.out, "WROTE rejected")
	case err != nil:
		return err
	default:
		fmt.Fprintln(w.out, "WROTE ok")
	}
	ls.release(context.WithoutCancel(ctx), key, h)
	return nil
}
