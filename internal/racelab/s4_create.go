package racelab

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"

	"github.com/haita/haita/sqlcc"
)

// autoID is the dialect's auto-increment primary key column.
func (d *database) autoID() string {
	switch d.dialect {
	case sqlcc.Postgres:
		return "id BIGSERIAL PRIMARY KEY"
	case sqlcc.MySQL:
		return "id BIGINT AUTO_INCREMENT PRIMARY KEY"
	}
	return "id INTEGER PRIMARY KEY AUTOINCREMENT"
}

// createScenario is S1 and S11: check-then-insert lets two creators pass the
// check. Without a unique key both insert; with one, the second creator's
// request fails with "Duplicate entry". Fixed: idempotent create on the
// unique key (the second creator gets the first one's row), or a lock on the
// parent row so that creator B waits for creator A.
func createScenario() *Scenario {
	return &Scenario{
		ID: 4, Name: "create", Title: "Duplicate creation: check-then-insert",
		Seeds: "S1 S11", Unit: "duplicates / failed creates", Workers: 6, Ops: 12,
		cases: func(e *env) []Case {
			var cs []Case
			for _, en := range dbEngines {
				cs = append(cs,
					Case{Variant: "check-then-insert", Kind: Broken, Engine: en, run: create("check")},
					Case{Variant: "check-then-insert + unique key", Kind: Broken, Engine: en, run: create("unique")},
					Case{Variant: "unique key + CreateOrGet", Kind: Fixed, Engine: en, run: create("createorget")},
					Case{Variant: "parent row lock", Kind: Fixed, Engine: en, run: create("parent")},
				)
			}
			return cs
		},
	}
}

// create makes every worker register the same logins in the same order:
// op i registers "user-i", so all workers race for each login.
func create(impl string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		d, err := rc.db(ctx, rc.engineOf())
		if err != nil {
			return 0, "", err
		}
		unique := ""
		if impl == "unique" || impl == "createorget" {
			unique = " UNIQUE"
		}
		if err := rc.create(ctx, d, "users", "CREATE TABLE {users} ("+d.autoID()+", login VARCHAR(64) NOT NULL"+unique+")"); err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "tenants", "CREATE TABLE {tenants} (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL)"); err != nil {
			return 0, "", err
		}
		if err := d.exec(ctx, "INSERT INTO {tenants} (id, name) VALUES (1, 'acme')"); err != nil {
			return 0, "", err
		}
		users, tenants := d.table("users"), d.table("tenants")
		var failed atomic.Int64
		checkInsert := func(ctx context.Context, db sqlcc.DB, login string) error {
			var n int64
			if err := db.QueryRowContext(ctx, d.q("SELECT COUNT(*) FROM {users} WHERE login = ?"), login).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil // already registered: nothing to do
			}
			rc.widen()
			_, err := db.ExecContext(ctx, d.q("INSERT INTO {users} (login) VALUES (?)"), login)
			return err
		}
		err = rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			login := fmt.Sprintf("user-%d", i)
			switch impl {
			case "check", "unique":
				o.attempt()
				err := checkInsert(ctx, d.db, login)
				if impl == "unique" && sqlcc.IsUniqueViolation(err) {
					failed.Add(1) // the user sees "Duplicate entry"
					return nil
				}
				return err
			case "createorget":
				o.attempt()
				rc.widen()
				var id int64
				_, err := sqlcc.CreateOrGet(ctx, d.db, sqlcc.Row{Table: users, Unique: []string{"login"}, Values: []sqlcc.Assignment{sqlcc.Set("login", login)}}, &id)
				return err
			default: // parent row lock: B waits for A, then finds A's row
				return sqlcc.RunTx(ctx, d.db, txOpts, func(ctx context.Context, tx *sql.Tx) error {
					if err := sqlcc.LockRow(ctx, tx, tenants, 1, sqlcc.LockOptions{}, nil); err != nil {
						return err
					}
					o.attempt()
					return checkInsert(ctx, tx, login)
				})
			}
		})
		rows, rerr := d.int(ctx, "SELECT COUNT(*) FROM {users}")
		logins, rerr2 := d.int(ctx, "SELECT COUNT(DISTINCT login) FROM {users}")
		if err == nil {
			err = rerr
		}
		if err == nil {
			err = rerr2
		}
		dups := rows - logins
		return dups + failed.Load(), fmt.Sprintf("%d logins, %d rows: %d duplicates; %d creates failed with a duplicate-key error", logins, rows, dups, failed.Load()), err
	}
}
