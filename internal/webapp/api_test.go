package webapp

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// step is one request of a scenario and what must come back.
type step struct {
	name, as, method, path, body string
	header                       []string
	status                       int
	etag                         string // expected ETag header, if set
	contains                     string // expected in the body, if set
}

func runSteps(t *testing.T, ta *testApp, steps []step) {
	t.Helper()
	for _, s := range steps {
		r := ta.call(t, s.as, s.method, s.path, s.body, s.header...)
		if r.StatusCode != s.status {
			t.Fatalf("%s: %s %s: status %d, want %d: %s", s.name, s.method, s.path, r.StatusCode, s.status, r.body)
		}
		if s.etag != "" && r.Header.Get("ETag") != s.etag {
			t.Fatalf("%s: ETag %q, want %q", s.name, r.Header.Get("ETag"), s.etag)
		}
		if s.contains != "" && !strings.Contains(string(r.body), s.contains) {
			t.Fatalf("%s: body lacks %q: %s", s.name, s.contains, r.body)
		}
		if r.StatusCode >= 400 && r.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s: error with Content-Type %q", s.name, r.Header.Get("Content-Type"))
		}
	}
}

func TestAPIAuth(t *testing.T) {
	ta := newTestApp(t, "")
	runSteps(t, ta, []step{
		{name: "no credentials", method: "GET", path: "/api/documents", status: 401, contains: "Bearer"},
		{name: "wrong token", method: "GET", path: "/api/documents", header: []string{"Authorization: Bearer nope"}, status: 401},
		{name: "wrong scheme", method: "GET", path: "/api/documents", header: []string{"Authorization: Basic YWxpY2U6YWxpY2U="}, status: 401},
		{name: "events need a user", method: "GET", path: "/events", status: 401},
		{name: "me", as: "alice", method: "GET", path: "/api/me", status: 200, contains: `"name":"alice"`},
		{name: "list", as: "alice", method: "GET", path: "/api/documents", status: 200, contains: `"contract"`},
		{name: "unknown endpoint", as: "alice", method: "GET", path: "/api/nothing", status: 404},
	})
	r := ta.call(t, "", "GET", "/api/documents", "")
	if r.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
}

func TestAPIOptimistic(t *testing.T) {
	ta := newTestApp(t, "")
	const p = "/api/documents/price-list"
	runSteps(t, ta, []step{
		{name: "read", as: "alice", method: "GET", path: p, status: 200, etag: `"v1"`, contains: "Coffee"},
		{name: "not modified", as: "alice", method: "GET", path: p, header: []string{`If-None-Match: "v1"`}, status: 304},
		{name: "missing", as: "alice", method: "GET", path: "/api/documents/nope", status: 404},
		{name: "no precondition", as: "alice", method: "PUT", path: p, body: `{"body":"x"}`, status: 428, contains: "If-Match"},
		{name: "malformed If-Match", as: "alice", method: "PUT", path: p, body: `{"body":"x"}`, header: []string{"If-Match: v1"}, status: 400},
		{name: "save v1", as: "alice", method: "PUT", path: p, body: `{"body":"Coffee 3.40\n"}`, header: []string{`If-Match: "v1"`}, status: 200, etag: `"v2"`, contains: `"version":2`},
		{name: "stale save", as: "bob", method: "PUT", path: p, body: `{"body":"Tea 9\n"}`, header: []string{`If-Match: "v1"`}, status: 412, etag: `"v2"`, contains: `"etag":"\"v2\""`},
		{name: "bob's stale save changed nothing", as: "bob", method: "GET", path: p, status: 200, etag: `"v2"`, contains: "Coffee 3.40"},
		{name: "weak tag never matches", as: "bob", method: "PUT", path: p, body: `{"body":"x"}`, header: []string{`If-Match: W/"v2"`}, status: 412},
		{name: "deliberate overwrite", as: "bob", method: "PUT", path: p, body: `{"body":"Tea 9\n"}`, header: []string{`If-Match: *`}, status: 200, etag: `"v3"`},
		{name: "bad JSON", as: "bob", method: "PUT", path: p, body: `{"body":`, header: []string{`If-Match: "v3"`}, status: 400, contains: "invalid JSON"},
		{name: "unknown field", as: "bob", method: "PUT", path: p, body: `{"text":"x"}`, header: []string{`If-Match: "v3"`}, status: 400, contains: "unknown field"},
		{name: "trailing data", as: "bob", method: "PUT", path: p, body: `{"body":"x"} {}`, header: []string{`If-Match: "v3"`}, status: 400},
		{name: "wrong type", as: "bob", method: "PUT", path: p, body: `{"body":7}`, header: []string{`If-Match: "v3"`}, status: 400},
		{name: "empty body", as: "bob", method: "PUT", path: p, header: []string{`If-Match: "v3"`}, status: 400},
		{name: "not JSON", as: "bob", method: "PUT", path: p, body: `x`, header: []string{`If-Match: "v3"`, "Content-Type: text/plain"}, status: 415},
		{name: "empty title", as: "bob", method: "PUT", path: p, body: `{"title":""}`, header: []string{`If-Match: "v3"`}, status: 422},
		{name: "policy is fixed", as: "bob", method: "PUT", path: p, body: `{"policy":"last-write-wins"}`, header: []string{`If-Match: "v3"`}, status: 422},
		{name: "delete without If-Match", as: "bob", method: "DELETE", path: p, status: 428},
		{name: "stale delete", as: "bob", method: "DELETE", path: p, header: []string{`If-Match: "v2"`}, status: 412, etag: `"v3"`},
		{name: "delete", as: "bob", method: "DELETE", path: p, header: []string{`If-Match: "v3"`}, status: 204},
		{name: "gone", as: "bob", method: "GET", path: p, status: 404},
		{name: "update gone", as: "bob", method: "PUT", path: p, body: `{"body":"x"}`, header: []string{`If-Match: "v3"`}, status: 404},
	})
}

func TestAPICreate(t *testing.T) {
	ta := newTestApp(t, "")
	runSteps(t, ta, []step{
		{name: "create", as: "alice", method: "PUT", path: "/api/documents/memo", body: `{"title":"Memo","body":"hi","policy":"optimistic"}`, header: []string{"If-None-Match: *"}, status: 201, etag: `"v1"`},
		{name: "create again", as: "bob", method: "PUT", path: "/api/documents/memo", body: `{"title":"Memo","body":"mine","policy":"optimistic"}`, header: []string{"If-None-Match: *"}, status: 412, etag: `"v1"`, contains: "already exists"},
		{name: "first one kept", as: "bob", method: "GET", path: "/api/documents/memo", status: 200, contains: `"body":"hi"`},
		{name: "missing fields", as: "bob", method: "PUT", path: "/api/documents/memo2", body: `{"title":"Memo"}`, header: []string{"If-None-Match: *"}, status: 422},
		{name: "bad id", as: "bob", method: "PUT", path: "/api/documents/Bad_Id", body: `{"title":"M","body":"","policy":"optimistic"}`, header: []string{"If-None-Match: *"}, status: 422},
		{name: "bad policy", as: "bob", method: "PUT", path: "/api/documents/m3", body: `{"title":"M","body":"","policy":"maybe"}`, header: []string{"If-None-Match: *"}, status: 422},
		{name: "If-None-Match with a tag does not create", as: "bob", method: "PUT", path: "/api/documents/m4", body: `{"title":"M","body":"","policy":"optimistic"}`, header: []string{`If-None-Match: "v1"`}, status: 404, contains: `If-None-Match: *`},
		{name: "update a missing document", as: "bob", method: "PUT", path: "/api/documents/m5", body: `{"body":""}`, header: []string{`If-Match: "v1"`}, status: 404},
	})
}

func TestAPILastWriteWins(t *testing.T) {
	ta := newTestApp(t, "")
	runSteps(t, ta, []step{
		{name: "no precondition needed", as: "alice", method: "PUT", path: "/api/documents/welcome", body: `{"body":"a"}`, status: 200, etag: `"v2"`},
		{name: "bob overwrites", as: "bob", method: "PUT", path: "/api/documents/welcome", body: `{"body":"b"}`, status: 200, etag: `"v3"`},
		{name: "If-Match still honoured", as: "bob", method: "PUT", path: "/api/documents/welcome", body: `{"body":"c"}`, header: []string{`If-Match: "v2"`}, status: 412},
		{name: "no checkouts", as: "bob", method: "POST", path: "/api/documents/welcome/checkout", status: 409},
	})
}

func TestAPICheckout(t *testing.T) {
	ta := newTestApp(t, "")
	const p = "/api/documents/contract"
	runSteps(t, ta, []step{
		{name: "save without checkout", as: "alice", method: "PUT", path: p, body: `{"body":"x"}`, status: 428, contains: "check it out"},
		{name: "nobody holds it", as: "alice", method: "GET", path: p + "/checkout", status: 404},
	})
	r := ta.call(t, "alice", "POST", p+"/checkout", "")
	if r.StatusCode != 201 {
		t.Fatalf("acquire: %d %s", r.StatusCode, r.body)
	}
	tok, _ := r.json(t)["token"].(string)
	if tok == "" {
		t.Fatalf("acquire returned no token: %s", r.body)
	}
	again := ta.call(t, "alice", "POST", p+"/checkout", "")
	if again.StatusCode != 201 || again.json(t)["token"] != tok {
		t.Fatalf("acquire again as holder: %d %s", again.StatusCode, again.body)
	}
	runSteps(t, ta, []step{
		{name: "held", as: "bob", method: "POST", path: p + "/checkout", status: 423, contains: `"holder":"alice"`},
		{name: "get shows holder, no token", as: "bob", method: "GET", path: p + "/checkout", status: 200, contains: `"owner":"alice"`},
		{name: "save blocked", as: "bob", method: "PUT", path: p, body: `{"body":"bob"}`, status: 423, contains: "alice"},
		{name: "save with a wrong token", as: "bob", method: "PUT", path: p, body: `{"body":"bob"}`, header: []string{"Checkout-Token: forged"}, status: 423},
		{name: "delete blocked", as: "bob", method: "DELETE", path: p, header: []string{`If-Match: "v1"`}, status: 423},
		{name: "holder saves", as: "alice", method: "PUT", path: p, body: `{"body":"alice 1"}`, header: []string{"Checkout-Token: " + tok}, status: 200, etag: `"v2"`},
		{name: "holder saves with If-Match", as: "alice", method: "PUT", path: p, body: `{"body":"alice 2"}`, header: []string{"Checkout-Token: " + tok, `If-Match: "v2"`}, status: 200, etag: `"v3"`},
		{name: "holder, stale If-Match", as: "alice", method: "PUT", path: p, body: `{"body":"x"}`, header: []string{"Checkout-Token: " + tok, `If-Match: "v2"`}, status: 412},
		{name: "heartbeat", as: "alice", method: "POST", path: p + "/checkout/heartbeat", header: []string{"Checkout-Token: " + tok}, status: 200, contains: tok},
		{name: "heartbeat without token", as: "alice", method: "POST", path: p + "/checkout/heartbeat", status: 400},
		{name: "heartbeat, wrong token", as: "bob", method: "POST", path: p + "/checkout/heartbeat", header: []string{"Checkout-Token: forged"}, status: 409},
		{name: "release without token", as: "bob", method: "DELETE", path: p + "/checkout", status: 400},
		{name: "break needs admin", as: "bob", method: "POST", path: p + "/checkout/break", body: `{"reason":"mine now"}`, status: 403},
		{name: "break, bad JSON", as: "admin", method: "POST", path: p + "/checkout/break", body: `{"reason":`, status: 400},
		{name: "admin breaks", as: "admin", method: "POST", path: p + "/checkout/break", body: `{"reason":"Alice is on holiday"}`, status: 200, contains: `"owner":"alice"`},
		{name: "break again: none", as: "admin", method: "POST", path: p + "/checkout/break", status: 404},
		{name: "former holder is told", as: "alice", method: "POST", path: p + "/checkout/heartbeat", header: []string{"Checkout-Token: " + tok}, status: 409, contains: `"reason":"Alice is on holiday"`},
		{name: "former holder cannot save", as: "alice", method: "PUT", path: p, body: `{"body":"late"}`, header: []string{"Checkout-Token: " + tok}, status: 409, contains: `"broken_by":"admin"`},
		{name: "nothing saved", as: "bob", method: "GET", path: p, status: 200, etag: `"v3"`, contains: "alice 2"},
		{name: "bob takes it", as: "bob", method: "POST", path: p + "/checkout", status: 201},
		{name: "checkout on a missing document", as: "bob", method: "POST", path: "/api/documents/nope/checkout", status: 404},
		{name: "checkout on an optimistic document", as: "bob", method: "GET", path: "/api/documents/price-list/checkout", status: 409},
	})
	// Release by bob ends it.
	bt := ta.call(t, "bob", "POST", p+"/checkout", "").json(t)["token"].(string)
	runSteps(t, ta, []step{
		{name: "release", as: "bob", method: "DELETE", path: p + "/checkout", header: []string{"Checkout-Token: " + bt}, status: 204},
		{name: "release twice", as: "bob", method: "DELETE", path: p + "/checkout", header: []string{"Checkout-Token: " + bt}, status: 409},
		{name: "free", as: "alice", method: "GET", path: p + "/checkout", status: 404},
	})
}

func TestSessionCSRFAndCrossOrigin(t *testing.T) {
	ta := newTestApp(t, "")
	b := ta.signIn(t, "alice")
	put := func(header ...string) response {
		return doReq(t, b.c, b.base, "", "PUT", "/api/documents/welcome", `{"body":"s"}`, header...)
	}
	if r := put(); r.StatusCode != http.StatusForbidden || !strings.Contains(string(r.body), "CSRF") {
		t.Fatalf("session write without CSRF token: %d %s", r.StatusCode, r.body)
	}
	if r := put("X-CSRF-Token: " + b.csrf); r.StatusCode != 200 {
		t.Fatalf("session write with CSRF token: %d %s", r.StatusCode, r.body)
	}
	if r := put("X-CSRF-Token: "+b.csrf, "Sec-Fetch-Site: cross-site"); r.StatusCode != http.StatusForbidden || !strings.Contains(string(r.body), "cross-origin") {
		t.Fatalf("cross-site write: %d %s", r.StatusCode, r.body)
	}
	if r := put("X-CSRF-Token: "+b.csrf, "Origin: https://evil.example"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("write from another origin: %d %s", r.StatusCode, r.body)
	}
	// A token from API clients is not at risk from CSRF, but a forged
	// cross-site form is refused even with a bearer token.
	if r := ta.call(t, "alice", "PUT", "/api/documents/welcome", `{"body":"t"}`, "Sec-Fetch-Site: cross-site"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site API write: %d", r.StatusCode)
	}
	// Form posts: without the token, and from another site.
	if r := b.form("/docs/welcome/save", url.Values{"title": {"W"}, "body": {"x"}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("form without CSRF token: %d", r.StatusCode)
	}
	if r := b.form("/logout", url.Values{"csrf": {"wrong"}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("logout with a wrong CSRF token: %d", r.StatusCode)
	}
	// Reads are never blocked.
	if r := b.get("/api/documents"); r.StatusCode != 200 {
		t.Fatalf("session read: %d", r.StatusCode)
	}
}

func TestOpenAPI(t *testing.T) {
	ta := newTestApp(t, "")
	r := ta.call(t, "", "GET", "/api/openapi.json", "")
	if r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}
	var spec struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(r.body, &spec); err != nil {
		t.Fatal(err)
	}
	if spec.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q", spec.OpenAPI)
	}
	for _, op := range []string{"get /api/me", "get /api/documents", "get /api/documents/{id}", "put /api/documents/{id}",
		"delete /api/documents/{id}", "get /api/documents/{id}/checkout", "post /api/documents/{id}/checkout",
		"delete /api/documents/{id}/checkout", "post /api/documents/{id}/checkout/heartbeat",
		"post /api/documents/{id}/checkout/break", "get /events"} {
		m, p, _ := strings.Cut(op, " ")
		if _, ok := spec.Paths[p][m]; !ok {
			t.Errorf("OpenAPI lacks %s", op)
		}
	}
}

// readEvent reads server-sent events until one named "doc" for id arrives
// for which ok holds.
func readEvent(t *testing.T, sc *bufio.Scanner, id string, ok func(docEvent) bool) docEvent {
	t.Helper()
	var name string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && name == "doc":
			var ev docEvent
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
				t.Fatal(err)
			}
			if ev.ID == id && ok(ev) {
				return ev
			}
		}
	}
	t.Fatalf("event stream ended: %v", sc.Err())
	return docEvent{}
}

func openEvents(t *testing.T, base, as string) *bufio.Scanner {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctxTimeout(t, 20*time.Second), "GET", base+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+DemoToken(as))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	return sc
}

func TestEvents(t *testing.T) {
	ta := newTestApp(t, "")
	sc := openEvents(t, ta.srv.URL, "bob")
	time.Sleep(150 * time.Millisecond) // let the poller take its first snapshot
	ta.call(t, "alice", "PUT", "/api/documents/welcome", `{"body":"live"}`)
	ev := readEvent(t, sc, "welcome", func(e docEvent) bool { return e.Version == 2 })
	if ev.Body != "live" || ev.UpdatedBy != "alice" {
		t.Errorf("save event %+v", ev)
	}
	ta.call(t, "alice", "POST", "/api/documents/contract/checkout", "")
	ev = readEvent(t, sc, "contract", func(e docEvent) bool { return e.Checkout != nil })
	if ev.Checkout.Owner != "alice" || ev.Checkout.Token != "" || ev.Checkout.FreeBy.IsZero() {
		t.Errorf("checkout event %+v", ev.Checkout)
	}
	ta.call(t, "admin", "POST", "/api/documents/contract/checkout/break", "")
	readEvent(t, sc, "contract", func(e docEvent) bool { return e.Checkout == nil })
	ta.call(t, "alice", "DELETE", "/api/documents/price-list", "", `If-Match: "v1"`)
	readEvent(t, sc, "price-list", func(e docEvent) bool { return e.Deleted })
}
