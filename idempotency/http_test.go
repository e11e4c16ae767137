package idempotency_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haita/haita/idempotency"
)

// The tests named TestDraft* check, over HTTP against real stores, the rows
// of the requirements table in docs/idempotency.md (the IETF HTTPAPI draft
// "The Idempotency-Key HTTP Header Field").

const docURL = "https://example.com/docs/idempotency"

// shop is the application under test: POST /orders creates an order.
type shop struct {
	orders atomic.Int64
	// hold, when set, runs inside the handler before it answers.
	hold func()
}

func (s *shop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	switch r.URL.Path {
	case "/orders":
		if s.hold != nil {
			s.hold()
		}
		if !json.Valid(body) {
			http.Error(w, "invalid JSON", http.StatusBadRequest)
			return
		}
		id := s.orders.Add(1)
		w.Header().Set("Location", fmt.Sprintf("/orders/%d", id))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%d,"order":%s}`, id, body)
	case "/boom":
		s.orders.Add(1)
		http.Error(w, "database down", http.StatusServiceUnavailable)
	default:
		http.NotFound(w, r)
	}
}

func newShop(t *testing.T, s idempotency.Store, ro idempotency.Options, ho idempotency.HTTPOptions) (*shop, *httptest.Server) {
	t.Helper()
	r := newRunner(t, s, ro)
	mw, err := idempotency.Middleware(r, ho)
	if err != nil {
		t.Fatal(err)
	}
	app := &shop{}
	srv := httptest.NewServer(mw(app))
	t.Cleanup(srv.Close)
	return app, srv
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func post(t *testing.T, url string, body string, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return response{}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Error(err)
	}
	res.Header.Del("Date")
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// problem checks that r is a problem document with the status and, when
// DocURL is set, the documentation link.
func problem(t *testing.T, r response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d (%s); want %d", r.status, r.body, status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q; want application/problem+json", ct)
	}
	var p struct {
		Type, Title, Detail string
		Status              int
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %s: %v", r.body, err)
	}
	if p.Status != status || p.Title == "" || p.Detail == "" || p.Type != docURL {
		t.Errorf("problem %+v", p)
	}
	if l := r.header.Get("Link"); !strings.Contains(l, "<"+docURL+">") || !strings.Contains(l, `rel="describedby"`) {
		t.Errorf("Link %q; want the documentation", l)
	}
}

const key = "Idempotency-Key"

// TestDraftSyntax: rows 1 and 2, the field is one sf-string.
func TestDraftSyntax(t *testing.T) {
	_, srv := newShop(t, storeKinds[2].open(t), idempotency.Options{}, idempotency.HTTPOptions{Required: true, DocURL: docURL})
	for _, tc := range []struct {
		name   string
		header []string
		status int
	}{
		{"sf-string", []string{key, `"8e03978e-40d5-43e8-bc93-6894a57f9324"`}, http.StatusCreated},
		{"escapes", []string{key, `"a\"b\\c"`}, http.StatusCreated},
		{"token, not a string", []string{key, `8e03978e`}, http.StatusBadRequest},
		{"empty string", []string{key, `""`}, http.StatusBadRequest},
		{"unterminated", []string{key, `"abc`}, http.StatusBadRequest},
		{"parameters", []string{key, `"abc";a=1`}, http.StatusBadRequest},
		{"list", []string{key, `"a", "b"`}, http.StatusBadRequest},
		{"bad escape", []string{key, `"a\nb"`}, http.StatusBadRequest},
		{"non-ASCII", []string{key, "\"caf\xc3\xa9\""}, http.StatusBadRequest},
		{"two fields", []string{key, `"k1"`, key, `"k1"`}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, srv.URL+"/orders", `{"item":"`+tc.name+`"}`, tc.header...)
			if tc.status == http.StatusBadRequest {
				problem(t, r, tc.status)
				return
			}
			if r.status != tc.status {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
		})
	}
}

// TestDraftMissing: row 10, a required key that is missing is 400 with a
// problem document linking the documentation; without Required the request
// passes through.
func TestDraftMissing(t *testing.T) {
	s := storeKinds[2].open(t)
	app, srv := newShop(t, s, idempotency.Options{}, idempotency.HTTPOptions{Required: true, DocURL: docURL})
	problem(t, post(t, srv.URL+"/orders", `{}`), http.StatusBadRequest)
	if n := app.orders.Load(); n != 0 {
		t.Errorf("%d orders created without a key; want 0", n)
	}
	app2, srv2 := newShop(t, s, idempotency.Options{}, idempotency.HTTPOptions{DocURL: docURL})
	if r := post(t, srv2.URL+"/orders", `{}`); r.status != http.StatusCreated || app2.orders.Load() != 1 {
		t.Errorf("optional key, none sent: %d", r.status)
	}
}

// TestDraftReplay: rows 7 and 8 on every store: the first request is
// processed normally; a retry after completion gets the stored response
// byte for byte, success or error, marked as a replay.
func TestDraftReplay(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		app, srv := newShop(t, k.open(t), idempotency.Options{}, idempotency.HTTPOptions{DocURL: docURL})
		first := post(t, srv.URL+"/orders", `{"item":"tea"}`, key, `"o-1"`)
		if first.status != http.StatusCreated || first.header.Get(idempotency.HeaderReplayed) != "" {
			t.Fatalf("first: %d %v %s", first.status, first.header, first.body)
		}
		for range 2 {
			again := post(t, srv.URL+"/orders", `{"item":"tea"}`, key, `"o-1"`)
			if again.status != first.status || !bytes.Equal(again.body, first.body) ||
				again.header.Get("Location") != first.header.Get("Location") ||
				again.header.Get("Content-Type") != first.header.Get("Content-Type") {
				t.Fatalf("replay differs:\n%d %v %q\n%d %v %q", first.status, first.header, first.body, again.status, again.header, again.body)
			}
			if again.header.Get(idempotency.HeaderReplayed) != "true" {
				t.Errorf("replay not marked: %v", again.header)
			}
		}
		// An error response (4xx) is an outcome too.
		bad := post(t, srv.URL+"/orders", `not json`, key, `"o-2"`)
		badAgain := post(t, srv.URL+"/orders", `not json`, key, `"o-2"`)
		if bad.status != http.StatusBadRequest || badAgain.status != bad.status || !bytes.Equal(bad.body, badAgain.body) ||
			badAgain.header.Get(idempotency.HeaderReplayed) != "true" {
			t.Errorf("4xx replay: %d %q then %d %q", bad.status, bad.body, badAgain.status, badAgain.body)
		}
		// A 5xx is not stored: the retry runs the handler again.
		post(t, srv.URL+"/boom", `{}`, key, `"o-3"`)
		if r := post(t, srv.URL+"/boom", `{}`, key, `"o-3"`); r.status != http.StatusServiceUnavailable || r.header.Get(idempotency.HeaderReplayed) != "" {
			t.Errorf("5xx retry: %d %v", r.status, r.header)
		}
		if n := app.orders.Load(); n != 3 {
			t.Errorf("%d executions; want 3 (one order, two 5xx)", n)
		}
	})
}

// TestDraftConcurrent: rows 9 and 12 on every store: N concurrent first
// requests with one key run the handler once; every other request gets 409
// (a problem document with Retry-After) or, if it arrived after completion,
// the replay.
func TestDraftConcurrent(t *testing.T) {
	const n = 12
	forEachStore(t, func(t *testing.T, k storeKind) {
		var answered atomic.Int64
		allAnswered := make(chan struct{})
		app, srv := newShop(t, k.open(t), idempotency.Options{Lease: 10 * time.Second}, idempotency.HTTPOptions{DocURL: docURL})
		app.hold = func() {
			// Hold the first execution until every other request has
			// been answered; a second execution would count itself.
			select {
			case <-allAnswered:
			case <-time.After(30 * time.Second):
			}
		}
		start := make(chan struct{})
		res := make([]response, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				res[i] = post(t, srv.URL+"/orders", `{"item":"coffee"}`, key, `"double-click"`)
				if res[i].status != http.StatusCreated && answered.Add(1) == n-1 {
					close(allAnswered)
				}
			})
		}
		close(start)
		wg.Wait()
		if got := app.orders.Load(); got != 1 {
			t.Fatalf("%d orders; want 1", got)
		}
		var created, conflict int
		for _, r := range res {
			switch r.status {
			case http.StatusCreated:
				created++
			case http.StatusConflict:
				conflict++
				problem(t, r, http.StatusConflict)
				if r.header.Get("Retry-After") == "" {
					t.Error("409 without Retry-After")
				}
			default:
				t.Errorf("status %d: %s", r.status, r.body)
			}
		}
		if created != 1 || conflict != n-1 {
			t.Errorf("%d created, %d conflicts", created, conflict)
		}
	})
}

// TestDraftReuse: rows 3, 11 and 13 on every store: the key reused with a
// different request is 422, again on every retry, and the handler does not
// run.
func TestDraftReuse(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		app, srv := newShop(t, k.open(t), idempotency.Options{}, idempotency.HTTPOptions{DocURL: docURL})
		if r := post(t, srv.URL+"/orders", `{"amount":10}`, key, `"pay-1"`); r.status != http.StatusCreated {
			t.Fatalf("first: %d", r.status)
		}
		for range 2 {
			problem(t, post(t, srv.URL+"/orders", `{"amount":99}`, key, `"pay-1"`), http.StatusUnprocessableEntity)
		}
		if n := app.orders.Load(); n != 1 {
			t.Errorf("%d executions; want 1", n)
		}
	})
}

// TestDraftFingerprint: row 5: the fingerprint covers the method, the path
// with its query and the body, and nothing else.
func TestDraftFingerprint(t *testing.T) {
	s := storeKinds[2].open(t)
	_, srv := newShop(t, s, idempotency.Options{}, idempotency.HTTPOptions{DocURL: docURL, Methods: []string{"POST", "PUT"}})
	if r := post(t, srv.URL+"/orders?x=1", `{}`, key, `"f"`); r.status != http.StatusCreated {
		t.Fatal(r.status)
	}
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
	}{
		{"same request, other header", "POST", "/orders?x=1", `{}`, http.StatusCreated},
		{"other body", "POST", "/orders?x=1", `{ }`, http.StatusUnprocessableEntity},
		{"other query", "POST", "/orders?x=2", `{}`, http.StatusUnprocessableEntity},
		{"other path", "POST", "/orders/?x=1", `{}`, http.StatusUnprocessableEntity},
		{"other method", "PUT", "/orders?x=1", `{}`, http.StatusUnprocessableEntity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			req.Header.Set(key, `"f"`)
			req.Header.Set("X-Other", "1")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != tc.status {
				t.Errorf("status %d; want %d", res.StatusCode, tc.status)
			}
		})
	}
	if got, want := idempotency.Fingerprint("POST", "/a", []byte("b")), idempotency.Fingerprint("POST", "/ab", nil); got == want {
		t.Error("fingerprint inputs are ambiguous")
	}
}

// TestDraftExpiry: row 4: after the published retention the key is
// forgotten and a request with it is processed as a first request.
func TestDraftExpiry(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		app, srv := newShop(t, k.open(t), idempotency.Options{Retention: 100 * time.Millisecond}, idempotency.HTTPOptions{DocURL: docURL})
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		for app.orders.Load() < 2 {
			if ctx.Err() != nil {
				t.Fatal("the key never expired")
			}
			post(t, srv.URL+"/orders", `{}`, key, `"e"`)
			time.Sleep(20 * time.Millisecond) // poll interval, not an assertion
		}
	})
}

// TestDraftSecurity: row 14: keys are validated before any lookup, and a
// Scope keeps two clients' equal keys apart.
func TestDraftSecurity(t *testing.T) {
	s := storeKinds[2].open(t)
	app, srv := newShop(t, s, idempotency.Options{}, idempotency.HTTPOptions{
		DocURL: docURL,
		Scope:  func(r *http.Request) string { return r.Header.Get("X-User") },
	})
	problem(t, post(t, srv.URL+"/orders", `{}`, key, `"`+strings.Repeat("k", 300)+`"`), http.StatusBadRequest)
	a := post(t, srv.URL+"/orders", `{}`, key, `"same"`, "X-User", "alice")
	b := post(t, srv.URL+"/orders", `{}`, key, `"same"`, "X-User", "bob")
	if a.status != http.StatusCreated || b.status != http.StatusCreated || bytes.Equal(a.body, b.body) || app.orders.Load() != 2 {
		t.Errorf("scoped keys: alice %d %s, bob %d %s", a.status, a.body, b.status, b.body)
	}
}

// TestBodyLimit: a body over MaxBodyBytes is 413 and the handler does not
// run; methods not listed pass through untouched.
func TestBodyLimit(t *testing.T) {
	s := storeKinds[2].open(t)
	app, srv := newShop(t, s, idempotency.Options{}, idempotency.HTTPOptions{DocURL: docURL, MaxBodyBytes: 16})
	problem(t, post(t, srv.URL+"/orders", `{"x":"`+strings.Repeat("a", 16)+`"}`, key, `"big"`), http.StatusRequestEntityTooLarge)
	if r := post(t, srv.URL+"/orders", `{}`, key, `"small"`); r.status != http.StatusCreated {
		t.Errorf("small body: %d", r.status)
	}
	if app.orders.Load() != 1 {
		t.Errorf("%d orders; want 1", app.orders.Load())
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/nothing", nil)
	req.Header.Set(key, "not-a-string")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET: %d; want the handler's 404", res.StatusCode)
	}
	r := newRunner(t, s, idempotency.Options{})
	if _, err := idempotency.Middleware(r, idempotency.HTTPOptions{MaxBodyBytes: -1}); err == nil {
		t.Error("negative MaxBodyBytes accepted")
	}
	if _, err := idempotency.Middleware(nil, idempotency.HTTPOptions{}); err == nil {
		t.Error("nil Runner accepted")
	}
}

// TestMiddlewareWait: with Wait, concurrent requests with one key wait for
// the first and all get its response; the handler runs once.
func TestMiddlewareWait(t *testing.T) {
	const n = 8
	app, srv := newShop(t, storeKinds[2].open(t), idempotency.Options{PollInterval: 5 * time.Millisecond},
		idempotency.HTTPOptions{DocURL: docURL, Wait: true})
	start := make(chan struct{})
	res := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			res[i] = post(t, srv.URL+"/orders", `{"item":"cake"}`, key, `"w"`)
		})
	}
	close(start)
	wg.Wait()
	replays := 0
	for _, r := range res {
		if r.status != http.StatusCreated || !bytes.Equal(r.body, res[0].body) {
			t.Errorf("status %d %s; want 201 %s", r.status, r.body, res[0].body)
		}
		if r.header.Get(idempotency.HeaderReplayed) == "true" {
			replays++
		}
	}
	if app.orders.Load() != 1 || replays != n-1 {
		t.Errorf("%d executions, %d replays; want 1 and %d", app.orders.Load(), replays, n-1)
	}
}
