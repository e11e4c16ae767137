package webapp

import (
	"net/url"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/haita/haita/internal/testserver"
)

// serverDBs are the shared-database engines the multi-process tests run
// on; each opens a fresh database for t and returns the URL OpenDB takes.
var serverDBs = []struct {
	name string
	open func(t testing.TB) string
}{
	{"postgres", testserver.Postgres},
	{"mariadb", mariaURL},
}

// mariaURL returns a fresh MariaDB database as the mysql:// URL that
// haita serve --db takes, so the tests go through the same parsing.
func mariaURL(t testing.TB) string {
	t.Helper()
	dsn := testserver.MariaDB(t)
	if dsn == "" { // skipped
		return ""
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	// The DSN's query (parseTime=true&...) is kept: driver options in the
	// URL must reach the driver, not be sent to the server as variables.
	u := url.URL{Scheme: "mysql", User: url.User(cfg.User), Host: cfg.Addr, Path: "/" + cfg.DBName}
	if cfg.Passwd != "" {
		u.User = url.UserPassword(cfg.User, cfg.Passwd)
	}
	if _, q, ok := strings.Cut(dsn, "?"); ok {
		u.RawQuery = q
	}
	return u.String()
}

// TestTwoInstancesOneDatabase runs two Apps, each with its own connection
// pool and its own loopback server, on one PostgreSQL or MariaDB database,
// as two haita serve processes would be: a checkout taken through one
// blocks edits through the other, a version moved through one is stale in
// the other, and each sees the other's changes on its event stream.
func TestTwoInstancesOneDatabase(t *testing.T) {
	for _, e := range serverDBs {
		t.Run(e.name, func(t *testing.T) { testTwoInstances(t, e.open(t)) })
	}
}

func testTwoInstances(t *testing.T, dsn string) {
	a, b := newTestApp(t, dsn), newTestApp(t, dsn)
	const p = "/api/documents/contract"

	events := openEvents(t, b.srv.URL, "bob")
	r := a.call(t, "alice", "POST", p+"/checkout", "")
	if r.StatusCode != 201 {
		t.Fatalf("acquire through A: %d %s", r.StatusCode, r.body)
	}
	tok := r.json(t)["token"].(string)
	ev := readEvent(t, events, "contract", func(e docEvent) bool { return e.Checkout != nil })
	if ev.Checkout.Owner != "alice" {
		t.Fatalf("B's event stream: %+v", ev.Checkout)
	}
	runSteps(t, b, []step{
		{name: "B: bob cannot check out", as: "bob", method: "POST", path: p + "/checkout", status: 423, contains: `"holder":"alice"`},
		{name: "B: bob cannot save", as: "bob", method: "PUT", path: p, body: `{"body":"bob"}`, status: 423},
		{name: "B: bob cannot delete", as: "bob", method: "DELETE", path: p, header: []string{`If-Match: "v1"`}, status: 423},
		{name: "B: alice saves with A's token", as: "alice", method: "PUT", path: p, body: `{"body":"alice via B"}`, header: []string{"Checkout-Token: " + tok}, status: 200, etag: `"v2"`},
	})
	readEvent(t, events, "contract", func(e docEvent) bool { return e.Version == 2 })
	runSteps(t, a, []step{
		{name: "A: admin breaks", as: "admin", method: "POST", path: p + "/checkout/break", body: `{"reason":"test"}`, status: 200},
	})
	runSteps(t, b, []step{
		{name: "B: alice is told", as: "alice", method: "POST", path: p + "/checkout/heartbeat", header: []string{"Checkout-Token: " + tok}, status: 409, contains: `"broken_by":"admin"`},
		{name: "B: bob checks out", as: "bob", method: "POST", path: p + "/checkout", status: 201},
	})
	runSteps(t, a, []step{
		{name: "A: alice blocked by bob", as: "alice", method: "PUT", path: p, body: `{"body":"x"}`, header: []string{"Checkout-Token: " + tok}, status: 423, contains: "bob"},
		// Optimistic across instances.
		{name: "A: save v1", as: "alice", method: "PUT", path: "/api/documents/price-list", body: `{"body":"A"}`, header: []string{`If-Match: "v1"`}, status: 200, etag: `"v2"`},
	})
	runSteps(t, b, []step{
		{name: "B: stale v1", as: "bob", method: "PUT", path: "/api/documents/price-list", body: `{"body":"B"}`, header: []string{`If-Match: "v1"`}, status: 412, etag: `"v2"`},
	})
}
