package webapp

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 250_000_000, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestCheckoutTokenBoundToOwner checks that a checkout token works only
// for the user who took the checkout: another signed-in user who has it
// can neither save, delete, renew nor release under it.
func TestCheckoutTokenBoundToOwner(t *testing.T) {
	ta := newTestApp(t, "")
	const p = "/api/documents/contract"
	r := ta.call(t, "alice", "POST", p+"/checkout", "")
	tok, _ := r.json(t)["token"].(string)
	if r.StatusCode != 201 || tok == "" {
		t.Fatalf("acquire: %d %s", r.StatusCode, r.body)
	}
	stolen := "Checkout-Token: " + tok
	runSteps(t, ta, []step{
		{name: "bob saves with alice's token", as: "bob", method: "PUT", path: p, body: `{"body":"bob"}`, header: []string{stolen}, status: 423, contains: `"holder":"alice"`},
		{name: "bob deletes with alice's token", as: "bob", method: "DELETE", path: p, header: []string{stolen, `If-Match: "v1"`}, status: 423},
		{name: "bob renews alice's checkout", as: "bob", method: "POST", path: p + "/checkout/heartbeat", header: []string{stolen}, status: 423},
		{name: "bob releases alice's checkout", as: "bob", method: "DELETE", path: p + "/checkout", header: []string{stolen}, status: 423},
		{name: "nothing saved", as: "bob", method: "GET", path: p, status: 200, etag: `"v1"`},
		{name: "still alice's", as: "bob", method: "GET", path: p + "/checkout", status: 200, contains: `"owner":"alice"`},
	})
	// The page's Cancel button with a stolen token releases nothing either.
	bob := ta.signIn(t, "bob")
	bob.form("/docs/contract/release", bob.withCSRF(url.Values{"token": {tok}}))
	if c, ok, err := ta.co.Get(t.Context(), "contract"); err != nil || !ok || c.Owner != "alice" {
		t.Fatalf("after bob's release: %+v %v %v", c, ok, err)
	}
	r = bob.form("/docs/contract/save", bob.withCSRF(url.Values{"title": {"C"}, "body": {"bob"}, "version": {"1"}, "token": {tok}}))
	if r.StatusCode != http.StatusConflict {
		t.Fatalf("bob's page save with alice's token: %d", r.StatusCode)
	}
	runSteps(t, ta, []step{
		{name: "alice still saves", as: "alice", method: "PUT", path: p, body: `{"body":"alice"}`, header: []string{"Checkout-Token: " + tok}, status: 200, etag: `"v2"`, contains: `"updated_by":"alice"`},
	})
}

// TestViewShowsHolder checks that the document page of a document another
// user has checked out names the holder instead of offering to check it out.
func TestViewShowsHolder(t *testing.T) {
	ta := newTestApp(t, "")
	if r := ta.call(t, "alice", "POST", "/api/documents/contract/checkout", ""); r.StatusCode != 201 {
		t.Fatalf("acquire: %d", r.StatusCode)
	}
	for _, as := range []string{"bob", "admin"} {
		page := string(ta.signIn(t, as).get("/docs/contract").body)
		if !strings.Contains(page, `id="edit" hidden`) {
			t.Errorf("%s is offered to check out a document alice holds", as)
		}
		if !strings.Contains(page, `Being edited by <b data-f="owner">alice</b>`) {
			t.Errorf("%s is not told alice holds it", as)
		}
	}
	if page := string(ta.signIn(t, "admin").get("/docs/contract").body); !strings.Contains(page, `id="break"`) {
		t.Error("the administrator lost the break button")
	}
	page := string(ta.signIn(t, "alice").get("/docs/contract").body)
	if strings.Contains(page, `id="edit" hidden`) || !strings.Contains(page, "Continue editing") {
		t.Error("the holder is not offered to continue editing")
	}
}

// TestSignInBackoff checks the per-account and per-address backoff on
// failed sign-ins.
func TestSignInBackoff(t *testing.T) {
	clock := newFakeClock()
	ta := newTestAppWith(t, "", func(o *Options) { o.Now = clock.Now })
	var anon browser
	anon.t, anon.c, anon.base = t, &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, ta.srv.URL
	login := func(name, pw string) response {
		t.Helper()
		return anon.form("/login", url.Values{"name": {name}, "password": {pw}})
	}
	// Per account: three free failures, then a wait that doubles.
	for i := range accountFreeFailures + 1 {
		if r := login("alice", "guess"+strconv.Itoa(i)); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, r.StatusCode)
		}
	}
	r := login("alice", "alice")
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "1" || !strings.Contains(string(r.body), "Too many failed sign-ins") {
		t.Fatalf("right password during the backoff: %d Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r := login("ALICE", "x"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("case variant of the name: %d", r.StatusCode)
	}
	if r := login("bob", "bob"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("another account from the same address: %d", r.StatusCode)
	}
	clock.Add(time.Second)
	if r := login("alice", "wrong"); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after the wait: %d", r.StatusCode)
	}
	if r := login("alice", "alice"); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "2" {
		t.Fatalf("the second wait doubles: %d Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	clock.Add(2 * time.Second)
	if r := login("alice", "alice"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("right password after the wait: %d", r.StatusCode)
	}
	// Per address: guessing over many names is held back too, for every
	// account, and a success does not reset it. So far 5 failures.
	for i := range addressFreeFailures - 5 + 1 {
		if r := login("nobody"+strconv.Itoa(i), "x"); r.StatusCode != http.StatusUnauthorized {
			t.Fatalf("address failure %d: %d", i, r.StatusCode)
		}
	}
	if r := login("bob", "bob"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after %d failures from one address: %d", addressFreeFailures+1, r.StatusCode)
	}
}

// TestProblemTypes checks that each kind of error has its own stable type
// URI, served with its description and documented in the OpenAPI document.
func TestProblemTypes(t *testing.T) {
	ta := newTestApp(t, "")
	typeOf := func(r response) string {
		t.Helper()
		typ, _ := r.json(t)["type"].(string)
		return typ
	}
	const p = "/api/documents/contract"
	tok := ta.call(t, "alice", "POST", p+"/checkout", "").json(t)["token"].(string)
	ta.call(t, "admin", "POST", p+"/checkout/break", `{"reason":"r"}`)
	got := map[string]string{
		"broken":          typeOf(ta.call(t, "alice", "PUT", p, `{"body":"x"}`, "Checkout-Token: "+tok)),
		"not held":        typeOf(ta.call(t, "alice", "POST", "/api/documents/handbook/checkout/heartbeat", "", "Checkout-Token: nope")),
		"not pessimistic": typeOf(ta.call(t, "alice", "POST", "/api/documents/welcome/checkout", "")),
		"stale":           typeOf(ta.call(t, "alice", "PUT", "/api/documents/price-list", `{"body":"x"}`, `If-Match: "v9"`)),
		"exists":          typeOf(ta.call(t, "alice", "PUT", "/api/documents/price-list", `{"title":"t","body":"x","policy":"optimistic"}`, "If-None-Match: *")),
		"required":        typeOf(ta.call(t, "alice", "PUT", "/api/documents/price-list", `{"body":"x"}`)),
		"not found":       typeOf(ta.call(t, "alice", "GET", "/api/documents/nope", "")),
	}
	want := map[string]problemType{"broken": ptCheckoutBroken, "not held": ptCheckoutNotHeld, "not pessimistic": ptNotPessimistic,
		"stale": ptPreconditionFailed, "exists": ptAlreadyExists, "required": ptPreconditionRequired, "not found": ptNotFound}
	for k, typ := range got {
		if typ != want[k].URI() {
			t.Errorf("%s: type %q, want %q", k, typ, want[k].URI())
		}
	}
	// An expired checkout is a third 409.
	clock := newFakeClock()
	tb := newTestAppWith(t, "", func(o *Options) { o.Now = clock.Now })
	tok = tb.call(t, "alice", "POST", p+"/checkout", "").json(t)["token"].(string)
	clock.Add(time.Hour)
	if typ := typeOf(tb.call(t, "alice", "PUT", p, `{"body":"x"}`, "Checkout-Token: "+tok)); typ != ptCheckoutExpired.URI() {
		t.Errorf("expired: type %q", typ)
	}

	spec := string(ta.call(t, "", "GET", "/api/openapi.json", "").body)
	for _, pt := range problemTypes() {
		if !strings.Contains(spec, `"`+pt.URI()+`"`) {
			t.Errorf("openapi.json does not document %s", pt.URI())
		}
		r := ta.call(t, "", "GET", pt.URI(), "")
		var d problemDoc
		if r.StatusCode != 200 || json.Unmarshal(r.body, &d) != nil || d.Type != pt.URI() || d.Status == 0 || d.Description == "" {
			t.Errorf("GET %s: %d %s", pt.URI(), r.StatusCode, r.body)
		}
	}
}

// TestMethodNotAllowed checks that an unsupported method on an API path is
// 405 with Allow, not 404.
func TestMethodNotAllowed(t *testing.T) {
	ta := newTestApp(t, "")
	r := ta.call(t, "alice", "PATCH", "/api/documents/price-list", `{"body":"x"}`, `If-Match: "v1"`)
	if r.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(r.Header.Get("Allow"), "PUT") {
		t.Fatalf("PATCH: %d Allow %q: %s", r.StatusCode, r.Header.Get("Allow"), r.body)
	}
	if r := ta.call(t, "alice", "POST", "/api/documents/price-list", `{}`); r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", r.StatusCode)
	}
	if r := ta.call(t, "alice", "GET", "/api/documents/price-list", ""); r.StatusCode != 200 {
		t.Fatalf("GET: %d", r.StatusCode)
	}
}

// TestJSONErrorsWithoutGoTypes checks that a body of the wrong shape is
// described in JSON terms, without the server's Go type names.
func TestJSONErrorsWithoutGoTypes(t *testing.T) {
	ta := newTestApp(t, "")
	for _, body := range []string{`[]`, `"x"`, `7`, `{"body":7}`, `{"title":{}}`, `{"body":"x"`, `{"body":"x",}`} {
		r := ta.call(t, "alice", "PUT", "/api/documents/welcome", body)
		detail, _ := r.json(t)["detail"].(string)
		if r.StatusCode != 400 || strings.Contains(detail, "Go ") || strings.Contains(detail, "webapp.") || strings.Contains(detail, "putBody") {
			t.Errorf("%s: %d %q", body, r.StatusCode, detail)
		}
	}
}

// TestStaticNoListing checks that /static/ serves its files and no
// directory listing.
func TestStaticNoListing(t *testing.T) {
	ta := newTestApp(t, "")
	for _, p := range []string{"/static/", "/static", "/static/."} {
		r := ta.call(t, "", "GET", p, "")
		if r.StatusCode == 200 || strings.Contains(string(r.body), "app.js") {
			t.Errorf("GET %s: %d %s", p, r.StatusCode, r.body)
		}
	}
	if r := ta.call(t, "", "GET", "/static/app.js", ""); r.StatusCode != 200 {
		t.Errorf("GET /static/app.js: %d", r.StatusCode)
	}
}

// TestConcurrentUnmodifiedSince checks that saves conditional on
// If-Unmodified-Since cannot both succeed: of several concurrent saves
// carrying the date of one read, exactly one is applied and the others get
// 412, because the date is evaluated against the row locked by the
// write's transaction and again by the UPDATE itself.
func TestConcurrentUnmodifiedSince(t *testing.T) {
	clock := newFakeClock()
	ta := newTestAppWith(t, "", func(o *Options) { o.Now = clock.Now })
	for _, doc := range []string{"welcome", "price-list"} { // last-write-wins, optimistic
		read := ta.call(t, "alice", "GET", "/api/documents/"+doc, "")
		lm := read.Header.Get("Last-Modified")
		if lm == "" {
			t.Fatalf("%s: no Last-Modified", doc)
		}
		clock.Add(5 * time.Second) // every save is later than the read
		const writers = 8
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			codes = make([]int, writers)
		)
		for i := range writers {
			wg.Go(func() {
				<-start
				r := ta.call(t, "bob", "PUT", "/api/documents/"+doc, `{"body":"writer `+strconv.Itoa(i)+`"}`, "If-Unmodified-Since: "+lm)
				codes[i] = r.StatusCode
			})
		}
		close(start)
		wg.Wait()
		ok := 0
		for _, c := range codes {
			switch c {
			case 200:
				ok++
			case 412:
			default:
				t.Errorf("%s: status %d", doc, c)
			}
		}
		if ok != 1 {
			t.Errorf("%s: %d of %d saves with If-Unmodified-Since %s succeeded, want 1 (statuses %v)", doc, ok, writers, lm, codes)
		}
		if v := ta.call(t, "bob", "GET", "/api/documents/"+doc, "").json(t)["version"]; v != 2.0 {
			t.Errorf("%s: version %v after the saves, want 2", doc, v)
		}
	}
}

// TestSameSecondSaves checks that If-Unmodified-Since protects a save made
// in the same second as the read it is based on: every version gets its
// own modification second, so the Last-Modified of a read tells the
// versions apart even when saves follow each other within a second.
func TestSameSecondSaves(t *testing.T) {
	clock := newFakeClock() // stands still: every request falls in one second
	ta := newTestAppWith(t, "", func(o *Options) { o.Now = clock.Now })
	for _, doc := range []string{"welcome", "price-list"} {
		p := "/api/documents/" + doc
		lm := ta.call(t, "alice", "GET", p, "").Header.Get("Last-Modified")
		if r := ta.call(t, "bob", "PUT", p, `{"body":"bob's"}`, "If-Unmodified-Since: "+lm); r.StatusCode != 200 {
			t.Fatalf("%s: bob saves: %d %s", doc, r.StatusCode, r.body)
		} else if got := r.Header.Get("Last-Modified"); got != lm {
			// Never later than the response's own time (RFC 9110 §8.8.2.1).
			t.Errorf("%s: Last-Modified %q after bob's save, want the current time %q", doc, got, lm)
		}
		r := ta.call(t, "alice", "PUT", p, `{"body":"alice's"}`, "If-Unmodified-Since: "+lm)
		if r.StatusCode != http.StatusPreconditionFailed {
			t.Errorf("%s: alice's save from before bob's, in the same second: %d, want 412", doc, r.StatusCode)
		}
		if d := ta.call(t, "alice", "GET", p, "").json(t); d["body"] != "bob's" {
			t.Errorf("%s: stored %q: bob's save was lost", doc, d["body"])
		}
	}
}

// TestBreakNothingHeld checks that the page does not report a break that
// did not happen.
func TestBreakNothingHeld(t *testing.T) {
	ta := newTestApp(t, "")
	admin := ta.signIn(t, "admin")
	r := admin.form("/docs/contract/break", admin.withCSRF(url.Values{"reason": {"r"}}))
	if loc := r.Header.Get("Location"); loc != "/docs/contract?m=notheld" {
		t.Fatalf("break of a free document: %d %q", r.StatusCode, loc)
	}
	if page := string(admin.get("/docs/contract?m=notheld").body); !strings.Contains(page, "no checkout to break") {
		t.Errorf("no notice: %s", page)
	}
}
