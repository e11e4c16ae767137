package webapp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/haita/haita/checkout"
)

// Live updates. One goroutine per App polls the documents table for changed
// (version, stamp) pairs and the checkouts it has seen for changes, and
// sends each change to every open event stream. Polling the database,
// rather than passing messages inside the process, is what makes a save
// through one haita serve process appear on pages served by another; a
// local change only makes the next poll come at once.

// docEvent is the data of one "doc" event.
type docEvent struct {
	Document
	Deleted  bool          `json:"deleted,omitempty"`
	Checkout *checkoutJSON `json:"checkout"`
}

// checkoutJSON is a checkout as the API and the event stream show it; the
// token is only shown to its owner.
type checkoutJSON struct {
	Resource string    `json:"resource"`
	Owner    string    `json:"owner"`
	Token    string    `json:"token,omitempty"`
	Since    time.Time `json:"since"`
	LastBeat time.Time `json:"last_beat"`
	Until    time.Time `json:"until"`
	// FreeBy is Since plus the maximum age: the checkout ends then at the
	// latest, heartbeats or not.
	FreeBy time.Time `json:"free_by"`
}

func (a *App) toCheckoutJSON(c checkout.Checkout, withToken bool) *checkoutJSON {
	j := &checkoutJSON{Resource: c.Resource, Owner: c.Owner, Since: c.Since, LastBeat: c.LastBeat, Until: c.Until,
		FreeBy: c.Since.Add(a.opts.CheckoutMaxAge)}
	if withToken {
		j.Token = c.Token
	}
	return j
}

type snapshot struct {
	version, stamp int64
	holder         string // checkout owner and since, "" when none
}

type hub struct {
	mu   sync.Mutex
	subs map[chan []byte]struct{}
	kick chan struct{}
	done chan struct{}
}

func newHub() *hub {
	return &hub{subs: map[chan []byte]struct{}{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
}

// changed asks the poller to look now.
func (a *App) changed() {
	select {
	case a.hub.kick <- struct{}{}:
	default:
	}
}

func (h *hub) subscribe() chan []byte {
	ch := make(chan []byte, 32)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	return ch
}

func (h *hub) unsubscribe(ch chan []byte) {
	h.mu.Lock()
	delete(h.subs, ch)
	h.mu.Unlock()
}

func (h *hub) broadcast(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- msg:
		default: // a stalled client misses this event; its page refreshes on the next one
		}
	}
}

// poll runs until ctx ends.
func (a *App) poll(ctx context.Context) {
	prev := map[string]snapshot{}
	first := true
	t := time.NewTicker(a.opts.PollInterval)
	defer t.Stop()
	for {
		cur, err := a.snapshot(ctx, prev)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("live updates: poll", "err", err)
		} else {
			if !first {
				a.emit(ctx, prev, cur)
			}
			prev, first = cur, false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.hub.kick:
		}
	}
}

// snapshot reads every document's version and stamp, and the checkout of
// every pessimistic document that had one or whose stamp moved: checkouts
// also end by expiry, which touches no document row.
func (a *App) snapshot(ctx context.Context, prev map[string]snapshot) (map[string]snapshot, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT id, policy, version, stamp FROM `+tDocs)
	if err != nil {
		return nil, err
	}
	cur := map[string]snapshot{}
	var pess []string
	for rows.Next() {
		var id, policy string
		var s snapshot
		if err := rows.Scan(&id, &policy, &s.version, &s.stamp); err != nil {
			rows.Close()
			return nil, err
		}
		p, seen := prev[id]
		if policy == Pessimistic && (!seen || p.holder != "" || p.stamp != s.stamp) {
			pess = append(pess, id)
		} else if seen {
			s.holder = p.holder
		}
		cur[id] = s
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, id := range pess {
		c, ok, err := a.co.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		s := cur[id]
		if ok {
			s.holder = c.Owner + "@" + c.Since.UTC().Format(time.RFC3339Nano)
		}
		cur[id] = s
	}
	return cur, nil
}

func (a *App) emit(ctx context.Context, prev, cur map[string]snapshot) {
	for id, s := range cur {
		if p, ok := prev[id]; ok && p == s {
			continue
		}
		ev, err := a.docEvent(ctx, id)
		if err != nil {
			a.log.Warn("live updates: read document", "doc", id, "err", err)
			continue
		}
		a.send("doc", ev)
	}
	for id := range prev {
		if _, ok := cur[id]; !ok {
			a.send("doc", docEvent{Document: Document{ID: id}, Deleted: true})
		}
	}
}

func (a *App) docEvent(ctx context.Context, id string) (docEvent, error) {
	d, err := a.getDoc(ctx, a.db, id)
	if err != nil {
		return docEvent{}, err
	}
	ev := docEvent{Document: d}
	if d.Policy == Pessimistic {
		c, ok, err := a.co.Get(ctx, id)
		if err != nil {
			return docEvent{}, err
		}
		if ok {
			ev.Checkout = a.toCheckoutJSON(c, false)
		}
	}
	return ev, nil
}

func (a *App) send(event string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		a.log.Error("live updates: encode", "err", err)
		return
	}
	a.hub.broadcast(fmt.Appendf(nil, "event: %s\ndata: %s\n\n", event, data))
}

// handleEvents streams server-sent events to a signed-in client until the
// client leaves or the App closes.
func (a *App) handleEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	ch := a.hub.subscribe()
	defer a.hub.unsubscribe(ch)
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 2000\n: live\n\n"); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	keep := time.NewTicker(20 * time.Second)
	defer keep.Stop()
	for {
		var msg []byte
		select {
		case <-r.Context().Done():
			return
		case <-a.hub.done:
			return
		case <-keep.C:
			msg = []byte(": keep-alive\n\n")
		case msg = <-ch:
		}
		if _, err := w.Write(msg); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
	}
}
