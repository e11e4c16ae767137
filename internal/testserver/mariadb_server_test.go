package testserver_test

import (
	"database/sql"
	"testing"
	"time"

	"github.com/haita/haita/internal/testserver"
)

// TestMariaDBServer stops and kills a dedicated MariaDB under a running
// query: the query fails, the server refuses connections while down, and
// after Start the rows committed before survive.
func TestMariaDBServer(t *testing.T) {
	t.Parallel()
	srv := testserver.MariaDBServer(t)
	ctx := t.Context()
	db, err := sql.Open("mysql", srv.DSN("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (id int) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	for i, down := range []func(){srv.Stop, srv.Kill} {
		if _, err := db.ExecContext(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		busy := make(chan error, 1)
		go func() {
			_, err := db.ExecContext(ctx, "DO SLEEP(600)")
			busy <- err
		}()
		for n := 0; n == 0; time.Sleep(10 * time.Millisecond) {
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM information_schema.processlist WHERE info = 'DO SLEEP(600)'").Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		down()
		select {
		case err := <-busy:
			if err == nil {
				t.Fatal("the busy query succeeded")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the busy query still runs after the server went down")
		}
		if err := db.PingContext(ctx); err == nil {
			t.Fatal("ping succeeded on a server that is down")
		}
		srv.Start()
		var n int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != i+1 {
			t.Fatalf("rows after restart %d = %d, %v; want %d (committed rows survive)", i+1, n, err, i+1)
		}
	}
}
