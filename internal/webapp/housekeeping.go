package webapp

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"sync"
	"time"

	"github.com/haita/haita/election"
)

// Housekeeper runs the App's housekeeping — sweeping expired checkouts and
// expired sign-ins — on one App among all those that share the database:
// the leader of an election. It serves a page (GET /leader) and JSON (GET
// /api/leader) saying which instance leads. It is safe for concurrent use;
// build it with [NewHousekeeper] and run it with Run.
type Housekeeper struct {
	a        *App
	e        *election.Election
	instance string
	every    time.Duration

	mu        sync.Mutex
	term      uint64 // this instance's current term; 0 when not leading
	sweeps    int    // housekeeping rounds this instance ran
	lastSweep time.Time
	lastErr   string
}

// NewHousekeeper returns a Housekeeper for a that campaigns in e as
// instance and, while leading, sweeps every interval. e's Locker should
// publish instance as its Options.Holder.
func NewHousekeeper(a *App, e *election.Election, instance string, every time.Duration) (*Housekeeper, error) {
	if a == nil || e == nil || instance == "" || every <= 0 {
		return nil, errors.New("webapp: housekeeper needs an App, an election, an instance name and a positive interval")
	}
	return &Housekeeper{a: a, e: e, instance: instance, every: every}, nil
}

// Run campaigns, sweeps while leading, and campaigns again after losing,
// until ctx ends; it returns context.Cause(ctx) then, after resigning.
func (h *Housekeeper) Run(ctx context.Context) error {
	return h.e.Run(ctx, election.Callbacks{
		OnStartedLeading: func(ctx context.Context, ld *election.Leadership) {
			h.a.log.Info("housekeeping: leading", "instance", h.instance, "term", ld.Term())
			h.mu.Lock()
			h.term = uint64(ld.Term())
			h.mu.Unlock()
			t := time.NewTicker(h.every)
			defer t.Stop()
			for {
				h.sweep(ctx)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		},
		OnStoppedLeading: func() {
			h.mu.Lock()
			h.term = 0
			h.mu.Unlock()
			h.a.log.Info("housekeeping: no longer leading", "instance", h.instance)
		},
	})
}

// sweep runs one round of housekeeping.
func (h *Housekeeper) sweep(ctx context.Context) {
	_, err := h.a.co.Sweep(ctx)
	if err == nil {
		_, err = h.a.db.ExecContext(ctx, h.a.q(`DELETE FROM `+tSessions+` WHERE expires < ?`), h.a.now().UnixMilli())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sweeps++
	h.lastSweep = time.Now()
	h.lastErr = ""
	if err != nil && ctx.Err() == nil {
		h.lastErr = err.Error()
		h.a.log.Warn("housekeeping", "err", err)
	}
}

// LeaderStatus is what GET /api/leader answers.
type LeaderStatus struct {
	// Instance is the instance that answers.
	Instance string `json:"instance"`
	// Leader is the instance that leads, empty when none does.
	Leader string `json:"leader"`
	// Term is the leader's term (its fencing token); 0 when none leads.
	Term uint64 `json:"term"`
	// Leading says whether the answering instance leads.
	Leading bool `json:"leading"`
	// Sweeps is how many housekeeping rounds the answering instance ran.
	Sweeps int `json:"sweeps"`
	// LastSweep is when it last ran one; absent if never.
	LastSweep *time.Time `json:"last_sweep,omitempty"`
	// Error is why the leader could not be read, or the last sweep's
	// error.
	Error string `json:"error,omitempty"`
}

// Status reads the leader and this instance's housekeeping state.
func (h *Housekeeper) Status(ctx context.Context) LeaderStatus {
	h.mu.Lock()
	st := LeaderStatus{Instance: h.instance, Leading: h.term != 0, Sweeps: h.sweeps, Error: h.lastErr}
	if !h.lastSweep.IsZero() {
		t := h.lastSweep
		st.LastSweep = &t
	}
	h.mu.Unlock()
	l, err := h.e.Leader(ctx)
	switch {
	case err == nil:
		st.Leader, st.Term = l.Value, uint64(l.Term)
	case !errors.Is(err, election.ErrNoLeader):
		st.Error = err.Error()
	}
	return st
}

var leaderPage = template.Must(template.New("leader").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>haita — housekeeping leader</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><main>
<h1>Housekeeping leader</h1>
<p>Every instance of haita serve on this database campaigns in one election; the leader sweeps
expired checkouts and sign-ins every {{.Every}}. When it stops, another instance takes over.</p>
<table>
<tr><th>This instance</th><td>{{.S.Instance}}{{if .S.Leading}} (leading){{end}}</td></tr>
<tr><th>Leader</th><td>{{if .S.Leader}}{{.S.Leader}}, term {{.S.Term}}{{else}}none{{end}}</td></tr>
<tr><th>Sweeps run here</th><td>{{.S.Sweeps}}{{with .S.LastSweep}}, last at {{.Format "15:04:05"}}{{end}}</td></tr>
{{with .S.Error}}<tr><th>Error</th><td>{{.}}</td></tr>{{end}}
</table>
<p><a href="/">Documents</a></p>
</main></body></html>
`))

// ServeHTTP serves GET /leader (a page) and GET /api/leader (JSON); it
// answers 404 for anything else.
func (h *Housekeeper) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		problem(w, ptMethodNotAllowed, fmt.Sprintf("%s is not allowed here", r.Method), nil)
		return
	}
	st := h.Status(r.Context())
	switch r.URL.Path {
	case "/api/leader":
		writeJSON(w, http.StatusOK, st)
	case "/leader":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = leaderPage.Execute(w, map[string]any{"S": st, "Every": h.every})
	default:
		http.NotFound(w, r)
	}
}
