package racelab

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/haita/haita/checkout"
	"github.com/haita/haita/httpcc"
	"github.com/haita/haita/sqlcc"
)

// editScenario is S12: users edit a shared document over several requests
// (read now, save later) through an HTTP API. Last-write-wins loses edits;
// optimistic control (ETag, If-Match, 412) rejects stale saves so the user
// reloads and reapplies; a pessimistic checkout makes the others wait.
func editScenario() *Scenario {
	return &Scenario{
		ID: 7, Name: "edit", Title: "Multi-request edits by simulated users",
		Seeds: "S12 S13", Unit: "lost edits", Workers: 5, Ops: 6,
		cases: func(e *env) []Case {
			var cs []Case
			for _, en := range dbEngines {
				cs = append(cs,
					Case{Variant: "last write wins", Kind: Broken, Engine: en, run: edit("lww")},
					Case{Variant: "optimistic (ETag, If-Match, 412)", Kind: Fixed, Engine: en, run: edit("optimistic")},
					Case{Variant: "checkout (pessimistic)", Kind: Fixed, Engine: en, run: edit("checkout")},
				)
			}
			return cs
		},
	}
}

// editServer is the document API the simulated users talk to.
type editServer struct {
	d  *database
	t  sqlcc.Table
	co *checkout.Manager
}

func (s *editServer) load(ctx context.Context) (body string, version int64, err error) {
	err = s.d.db.QueryRowContext(ctx, s.d.q("SELECT body, version FROM {docs} WHERE id = 1")).Scan(&body, &version)
	return body, version, err
}

func (s *editServer) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /doc", func(w http.ResponseWriter, r *http.Request) {
		body, v, err := s.load(r.Context())
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		httpcc.SetValidators(w.Header(), httpcc.State{ETag: httpcc.ETag(v), Exists: true})
		io.WriteString(w, body)
	})
	// Last write wins: the save overwrites whatever is there.
	mux.HandleFunc("PUT /lww/doc", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := s.d.exec(r.Context(), "UPDATE {docs} SET body = ?, version = version + 1 WHERE id = 1", string(b)); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
	})
	// Optimistic: If-Match is required and the write is conditional on the
	// version the client read.
	mux.Handle("PUT /optimistic/doc", httpcc.RequirePrecondition(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, v, err := s.load(r.Context())
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		cur := httpcc.State{ETag: httpcc.ETag(v), Exists: true}
		if err := httpcc.Check(r, cur); err != nil {
			httpcc.WriteError(w, err)
			return
		}
		b, _ := io.ReadAll(r.Body)
		nv, err := sqlcc.UpdateVersioned(r.Context(), s.d.db, s.t, 1, v, sqlcc.Set("body", string(b)))
		var ce *sqlcc.ConflictError
		if errors.As(err, &ce) {
			httpcc.WriteError(w, &httpcc.PreconditionError{Header: "If-Match", Current: httpcc.State{ETag: httpcc.ETag(ce.Current), Exists: true}})
			return
		}
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		httpcc.SetValidators(w.Header(), httpcc.State{ETag: httpcc.ETag(nv), Exists: true})
	})))
	// Checkout: take it, save with its token, release it.
	mux.HandleFunc("POST /checkout/doc", func(w http.ResponseWriter, r *http.Request) {
		c, err := s.co.Acquire(r.Context(), "doc/1", r.URL.Query().Get("user"))
		if errors.Is(err, checkout.ErrHeld) {
			http.Error(w, err.Error(), http.StatusLocked)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		io.WriteString(w, c.Token)
	})
	mux.HandleFunc("PUT /checkout/doc", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		err := s.co.Save(r.Context(), "doc/1", r.Header.Get("Checkout-Token"), func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, s.d.q("UPDATE {docs} SET body = ?, version = version + 1 WHERE id = 1"), string(b))
			return err
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
		}
	})
	mux.HandleFunc("DELETE /checkout/doc", func(w http.ResponseWriter, r *http.Request) {
		if err := s.co.Release(r.Context(), "doc/1", r.Header.Get("Checkout-Token")); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
		}
	})
	return mux
}

func edit(policy string) func(ctx context.Context, rc *runCtx) (int64, string, error) {
	return func(ctx context.Context, rc *runCtx) (int64, string, error) {
		d, err := rc.db(ctx, rc.engineOf())
		if err != nil {
			return 0, "", err
		}
		if err := rc.create(ctx, d, "docs", "CREATE TABLE {docs} (id BIGINT PRIMARY KEY, body TEXT NOT NULL, version BIGINT NOT NULL)"); err != nil {
			return 0, "", err
		}
		if err := d.exec(ctx, "INSERT INTO {docs} (id, body, version) VALUES (1, '', 1)"); err != nil {
			return 0, "", err
		}
		s := &editServer{d: d, t: d.table("docs")}
		if policy == "checkout" {
			store, err := checkout.NewSQLStore(d.db, checkout.SQLOptions{Table: d.name("co"), Dialect: d.dialect, Tx: txOpts})
			if err != nil {
				return 0, "", err
			}
			if err := store.CreateTable(ctx); err != nil {
				return 0, "", err
			}
			if d.engine != SQLite {
				rc.onClose(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_, _ = d.db.ExecContext(ctx, "DROP TABLE "+d.name("co")+"_ended")
					_, _ = d.db.ExecContext(ctx, "DROP TABLE "+d.name("co"))
				})
			}
			if s.co, err = checkout.New(store, checkout.Options{Idle: time.Minute, MaxAge: time.Hour}); err != nil {
				return 0, "", err
			}
		}
		srv := httptest.NewServer(s.routes())
		defer srv.Close()
		client := srv.Client()
		var acked atomic.Int64
		var rejected atomic.Int64
		var saved []string
		savedCh := make(chan string, rc.workers*rc.ops)
		call := func(ctx context.Context, method, path, body string, h map[string]string) (*http.Response, string, error) {
			req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
			if err != nil {
				return nil, "", err
			}
			for k, v := range h {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				return nil, "", err
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp, string(b), err
		}
		think := func() { time.Sleep(3 * rc.window) } // the user edits between load and save
		err = rc.loop(ctx, func(ctx context.Context, w, i int, o *op) error {
			mark := fmt.Sprintf("[u%d.%d]", w, i)
			switch policy {
			case "lww":
				o.attempt()
				_, body, err := call(ctx, "GET", "/doc", "", nil)
				if err != nil {
					return err
				}
				think()
				resp, _, err := call(ctx, "PUT", "/lww/doc", body+mark, nil)
				if err != nil {
					return err
				}
				if resp.StatusCode != 200 {
					return fmt.Errorf("save: %s", resp.Status)
				}
			case "optimistic":
				for {
					o.attempt()
					resp, body, err := call(ctx, "GET", "/doc", "", nil)
					if err != nil {
						return err
					}
					think()
					resp, _, err = call(ctx, "PUT", "/optimistic/doc", body+mark, map[string]string{"If-Match": resp.Header.Get("ETag")})
					if err != nil {
						return err
					}
					if resp.StatusCode == http.StatusPreconditionFailed {
						rejected.Add(1) // stale: reload and reapply the edit
						time.Sleep(time.Duration(w+1) * rc.window / 2)
						continue
					}
					if resp.StatusCode != 200 {
						return fmt.Errorf("save: %s", resp.Status)
					}
					break
				}
			default:
				user := fmt.Sprintf("user%d", w)
				var token string
				for {
					resp, body, err := call(ctx, "POST", "/checkout/doc?user="+user, "", nil)
					if err != nil {
						return err
					}
					if resp.StatusCode == http.StatusLocked {
						o.retry() // someone else is editing: wait and try again
						time.Sleep(rc.window)
						continue
					}
					if resp.StatusCode != 200 {
						return fmt.Errorf("checkout: %s: %s", resp.Status, body)
					}
					token = body
					break
				}
				o.attempt()
				_, body, err := call(ctx, "GET", "/doc", "", nil)
				if err != nil {
					return err
				}
				think()
				h := map[string]string{"Checkout-Token": token}
				resp, msg, err := call(ctx, "PUT", "/checkout/doc", body+mark, h)
				if err != nil {
					return err
				}
				if resp.StatusCode != 200 {
					return fmt.Errorf("save: %s: %s", resp.Status, msg)
				}
				if resp, msg, err := call(ctx, "DELETE", "/checkout/doc", "", h); err != nil || resp.StatusCode != 200 {
					return fmt.Errorf("release: %v %s", err, msg)
				}
			}
			acked.Add(1)
			savedCh <- mark
			return nil
		})
		close(savedCh)
		for m := range savedCh {
			saved = append(saved, m)
		}
		body, _, rerr := s.load(ctx)
		err = errors.Join(err, rerr)
		var lost int64
		for _, m := range saved {
			if !strings.Contains(body, m) {
				lost++
			}
		}
		detail := fmt.Sprintf("%d saves acknowledged, %d missing from the document", acked.Load(), lost)
		if policy == "optimistic" {
			detail += fmt.Sprintf("; %d stale saves rejected with 412 and reapplied", rejected.Load())
		}
		if policy == "checkout" {
			detail += fmt.Sprintf("; %d checkout attempts found it held and waited", rc.stats.retries.Load())
		}
		return lost, detail, err
	}
}
