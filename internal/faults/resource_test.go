package faults

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/sqlcc"
)

// The two fenced resources every workload writes: a PostgreSQL row written
// with sqlcc.FencedUpdate, and a register in a file. Both keep the greatest
// token that wrote and refuse a smaller one; equal tokens may write again.

var resourceTable = sqlcc.Table{Dialect: sqlcc.Postgres, Name: "resource"}

// pgInit creates the resource row of key with value 0 and no fence.
func pgInit(t testing.TB, db *sql.DB, key string) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), `INSERT INTO resource (id) VALUES ($1) ON CONFLICT DO NOTHING`, key); err != nil {
		t.Fatal(err)
	}
}

// pgRead returns the row's value and fence.
func pgRead(ctx context.Context, db *sql.DB, key string) (value int64, fence int64, err error) {
	var f sql.NullInt64
	err = db.QueryRowContext(ctx, `SELECT value, fence FROM resource WHERE id = $1`, key).Scan(&value, &f)
	return value, f.Int64, err
}

// pgWrite writes value with token: nil when accepted, an error matching
// sqlcc.ErrStaleToken when refused.
func pgWrite(ctx context.Context, db *sql.DB, key string, token lock.Token, value int64) error {
	return sqlcc.FencedUpdate(ctx, db, resourceTable, key, uint64(token), sqlcc.Set("value", value))
}

// fileRegister is a fenced register in a file: "fence value\n", read and
// written under an exclusive flock of its own (the storage's atomicity, not
// the lock under test). Every accepted write is appended to a log beside it
// so that the order of acceptance can be checked afterwards.
type fileRegister struct{ path string }

func newFileRegister(dir, key string) fileRegister {
	name := strings.NewReplacer("/", "_", "\x00", "_").Replace(key)
	return fileRegister{path: filepath.Join(dir, "register-"+name)}
}

// errStaleFile is the file register's refusal of an older token.
var errStaleFile = errors.New("file register: stale fencing token")

func (r fileRegister) with(fn func(f *os.File, fence uint64, value int64) error) error {
	f, err := os.OpenFile(r.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	buf := make([]byte, 64)
	n, _ := f.ReadAt(buf, 0)
	var fence uint64
	var value int64
	if n > 0 {
		if _, err := fmt.Sscanf(string(buf[:n]), "%d %d", &fence, &value); err != nil {
			return fmt.Errorf("file register %s: %q: %w", r.path, buf[:n], err)
		}
	}
	return fn(f, fence, value)
}

// Read returns the register's value and fence.
func (r fileRegister) Read() (value int64, fence uint64, err error) {
	err = r.with(func(_ *os.File, f uint64, v int64) error { fence, value = f, v; return nil })
	return value, fence, err
}

// Write stores value with token unless a greater token wrote before.
func (r fileRegister) Write(token lock.Token, value int64) error {
	return r.with(func(f *os.File, fence uint64, _ int64) error {
		if uint64(token) < fence {
			return fmt.Errorf("%w: token %d, stored %d", errStaleFile, token, fence)
		}
		if err := f.Truncate(0); err != nil {
			return err
		}
		if _, err := f.WriteAt(fmt.Appendf(nil, "%d %d\n", token, value), 0); err != nil {
			return err
		}
		log, err := os.OpenFile(r.path+".log", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		defer log.Close()
		_, err = log.Write(fmt.Appendf(nil, "%d %d\n", token, value))
		return err
	})
}

// acceptedTokens returns the tokens of the accepted writes in the order the
// register accepted them.
func (r fileRegister) acceptedTokens(t testing.TB) []uint64 {
	b, err := os.ReadFile(r.path + ".log")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var tok uint64
		var v int64
		if _, err := fmt.Sscanf(line, "%d %d", &tok, &v); err != nil {
			t.Fatalf("register log %q: %v", line, err)
		}
		out = append(out, tok)
	}
	return out
}
