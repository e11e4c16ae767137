package racelab

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/haita/haita/idempotency"
	"github.com/haita/haita/sqlcc"
)

// retryScenario is the duplicate that is one user, not two: a client whose
// POST times out and who sends it again while the first is still being
// processed, and a double submit (every worker sends the same order at
// once). Without a key every request creates a row; with a hand-made
// check-then-insert of the key both requests pass the check before either
// records the key; with idempotency.Middleware the first request's claim
// makes the others wait (409) and then replay its response.
func retryScenario() *Scenario {
	return &Scenario{
		ID: 10, Name: "retried-post", Title: "Retried POST and double submit: idempotency keys",
		Seeds: "S1 S17", Unit: "duplicate orders", Workers: 2, Ops: 6,
		cases: func(e *env) []Case {
			var cs []Case
			for _, en := range dbEngines {
				cs = append(cs,
					Case{Variant: "no idempotency key", Kind: Broken, Engine: en, run: retriedPost("none")},
					Case{Variant: "key: check-then-insert", Kind: Broken, Engine: en, run: retriedPost("naive")},
					Case{Variant: "key: idempotency.Middleware", Kind: Fixed, Engine: en, run: retriedPost("middleware")},
				)
			}
			return cs
		},
	}
}

// retriedPost runs an HTTP server on loopback whose POST /orders creates an
// order row, taking 4 race windows to do it. For op i every worker sends
// order i with the key "order-i": its first attempt gives up after 2
// windows (the client's timeout) and it retries, with the same key, until
// it gets an answer that is not 409.
func retriedPost(impl string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		d, err := rc.db(ctx, rc.engineOf())
		if err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "orders", "CREATE TABLE {orders} ("+d.autoID()+", order_no VARCHAR(64) NOT NULL)"); err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "keys", "CREATE TABLE {keys} (k VARCHAR(64) PRIMARY KEY, response VARCHAR(255) NOT NULL)"); err != nil {
			return 0, "", err
		}
		work := 4 * rc.window

		// The handler finishes its write even when the client has gone:
		// the request was accepted, as it is by most servers.
		var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := context.WithoutCancel(r.Context())
			body, _ := io.ReadAll(r.Body)
			orderNo := string(body)
			key := r.Header.Get("X-Naive-Key")
			if impl == "naive" {
				var resp string
				err := d.db.QueryRowContext(ctx, d.q("SELECT response FROM {keys} WHERE k = ?"), key).Scan(&resp)
				if err == nil {
					_, _ = io.WriteString(w, resp)
					return
				}
				if !errors.Is(err, sql.ErrNoRows) {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
			}
			time.Sleep(work)
			if err := d.exec(ctx, "INSERT INTO {orders} (order_no) VALUES (?)", orderNo); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			resp := "created " + orderNo
			if impl == "naive" {
				if err := d.exec(ctx, "INSERT INTO {keys} (k, response) VALUES (?, ?)", key, resp); err != nil && !sqlcc.IsUniqueViolation(err) {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
			}
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, resp)
		})
		if impl == "middleware" {
			store, err := idempotency.NewSQLStore(d.db, idempotency.SQLOptions{Table: d.name("idem"), Dialect: d.dialect})
			if err != nil {
				return 0, "", err
			}
			if err := store.CreateTable(ctx); err != nil {
				return 0, "", err
			}
			if d.engine != SQLite {
				name := d.name("idem")
				rc.onClose(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_, _ = d.db.ExecContext(ctx, "DROP TABLE "+name)
				})
			}
			r, err := idempotency.New(store, idempotency.Options{})
			if err != nil {
				return 0, "", err
			}
			mw, err := idempotency.Middleware(r, idempotency.HTTPOptions{Required: true})
			if err != nil {
				return 0, "", err
			}
			handler = mw(handler)
		}
		url, stop, err := serveLoopback(handler)
		if err != nil {
			return 0, "", err
		}
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		defer client.CloseIdleConnections()

		var timeouts, conflicts atomic.Int64
		err = rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			orderNo := fmt.Sprintf("order-%d", i)
			for attempt := 0; ; attempt++ {
				o.attempt()
				if attempt > 2000 {
					return fmt.Errorf("order %s: no answer after %d attempts", orderNo, attempt)
				}
				limit := 30 * time.Second
				if attempt == 0 {
					limit = work / 2
				}
				status, err := postOrder(ctx, client, url, orderNo, limit)
				switch {
				case errors.Is(err, context.DeadlineExceeded):
					rc.stats.retries.Add(1)
					timeouts.Add(1)
					continue
				case err != nil:
					return err
				case status == http.StatusConflict:
					rc.stats.retries.Add(1)
					conflicts.Add(1)
					rc.widen()
					continue
				case status >= 300:
					return fmt.Errorf("order %s: status %d", orderNo, status)
				}
				return nil
			}
		})
		// Let the handlers of abandoned requests finish their writes.
		stop()
		rows, rerr := d.int(ctx, "SELECT COUNT(*) FROM {orders}")
		orders, rerr2 := d.int(ctx, "SELECT COUNT(DISTINCT order_no) FROM {orders}")
		if err == nil {
			err = errors.Join(rerr, rerr2)
		}
		dups := rows - orders
		return dups, fmt.Sprintf("%d orders, %d rows: %d duplicates; %d client timeouts retried, %d answers 409 (in flight)",
			orders, rows, dups, timeouts.Load(), conflicts.Load()), err
	}
}

// postOrder sends one POST /orders with the order's key, giving up after
// limit.
func postOrder(ctx context.Context, c *http.Client, url, orderNo string, limit time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/orders", strings.NewReader(orderNo))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Idempotency-Key", `"`+orderNo+`"`)
	req.Header.Set("X-Naive-Key", orderNo)
	res, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, context.DeadlineExceeded
		}
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

// serveLoopback serves h on a free loopback port until stop, which shuts
// the server down and waits for its handlers.
func serveLoopback(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("racelab: listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
