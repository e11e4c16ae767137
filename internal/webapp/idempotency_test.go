package webapp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"

	"github.com/haita/haita/idempotency"
)

// docsTitled counts the documents with the given title.
func docsTitled(t *testing.T, ta *testApp, title string) int {
	t.Helper()
	docs, err := ta.listDocs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range docs {
		if d.Title == title {
			n++
		}
	}
	return n
}

// TestBrowserDoubleSubmit: the "New document" form and the editor carry an
// idempotency key, so a double click on Create, and the same form posted
// again (three times at once and once more after), create one document,
// and the editor's form posted four times makes one version.
func TestBrowserDoubleSubmit(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test")
	}
	ta := newTestApp(t, "")
	base := ta.srv.URL
	alice := newBrowser(t)()
	run(t, alice, "alice signs in", signInActions(base, "alice"))

	run(t, alice, "alice double-clicks Create",
		chromedp.Navigate(base+"/"),
		chromedp.Click(css(`details.new summary`)),
		chromedp.SendKeys(css(`form[action="/docs"] input[name=title]`), "Double click"),
		chromedp.DoubleClick(css(`form[action="/docs"] button[type=submit]`)),
		chromedp.WaitVisible(css(`.flash.ok`)))
	if n := docsTitled(t, ta, "Double click"); n != 1 {
		t.Fatalf("double click created %d documents; want 1", n)
	}

	run(t, alice, "alice edits the welcome note",
		chromedp.Navigate(base+"/docs/welcome/edit"),
		chromedp.SetValue(css(`#editor textarea[name=body]`), "Saved once"))
	saves := value(t, alice, "the editor is posted three times at once, then once more", chromedp.Evaluate[[]string](`(async () => {
		const f = document.getElementById('editor');
		const post = () => fetch(f.action, {method: 'POST', body: new URLSearchParams(new FormData(f))}).then(r => r.url);
		const first = await Promise.all([post(), post(), post()]);
		return [...first, await post()];
	})()`, chromedp.EvalAwaitPromise))
	for _, u := range saves {
		if !strings.HasSuffix(u, "/docs/welcome?m=saved") {
			t.Errorf("saves landed on %q; want all on the saved document's page", saves)
			break
		}
	}
	if d, err := ta.getDoc(t.Context(), ta.db, "welcome"); err != nil || d.Version != 2 || d.Body != "Saved once" {
		t.Fatalf("after four posts of one editor form: version %d %q, %v; want version 2", d.Version, d.Body, err)
	}

	run(t, alice, "alice fills the form again",
		chromedp.Navigate(base+"/"),
		chromedp.Click(css(`details.new summary`)),
		chromedp.SendKeys(css(`form[action="/docs"] input[name=title]`), "Resubmitted"))
	urls := value(t, alice, "the form is posted three times at once, then once more", chromedp.Evaluate[[]string](`(async () => {
		const f = document.querySelector('form[action="/docs"]');
		const body = () => new URLSearchParams(new FormData(f));
		const post = () => fetch('/docs', {method: 'POST', body: body()}).then(r => r.url);
		const first = await Promise.all([post(), post(), post()]);
		return [...first, await post()];
	})()`, chromedp.EvalAwaitPromise))
	if len(urls) != 4 {
		t.Fatalf("answers %q", urls)
	}
	for _, u := range urls {
		if u != urls[0] || !strings.Contains(u, "/docs/resubmitted") {
			t.Errorf("posts landed on %q; want all on the one document's page", urls)
			break
		}
	}
	if n := docsTitled(t, ta, "Resubmitted"); n != 1 {
		t.Fatalf("the resubmitted form created %d documents; want 1", n)
	}
}

// replayed reports whether r is a replay of a stored response.
func replayed(r response) bool { return r.Header.Get(idempotency.HeaderReplayed) == "true" }

// sameAnswer fails t unless second is the replay of first: the same
// status, Location and body, marked Idempotent-Replayed.
func sameAnswer(t *testing.T, first, second response) {
	t.Helper()
	if replayed(first) {
		t.Fatalf("the first request was answered as a replay")
	}
	if !replayed(second) {
		t.Fatalf("the second request with the key was not a replay: %d %q %s", second.StatusCode, second.Header.Get("Location"), second.body)
	}
	if second.StatusCode != first.StatusCode || second.Header.Get("Location") != first.Header.Get("Location") || !bytes.Equal(second.body, first.body) {
		t.Fatalf("replay differs: %d %q %s; first %d %q %s", second.StatusCode, second.Header.Get("Location"), second.body,
			first.StatusCode, first.Header.Get("Location"), first.body)
	}
}

// TestDoubleSubmitPages: each page form that posts to a non-idempotent
// route, submitted twice with its one key, has one effect, and the second
// answer is the replay of the first.
func TestDoubleSubmitPages(t *testing.T) {
	ta := newTestApp(t, "")

	t.Run("create", func(t *testing.T) {
		key := newFormKey()
		alice := ta.signIn(t, "alice")
		form := alice.withCSRF(url.Values{"title": {"Twice"}, "policy": {Optimistic}, formKeyField: {key}})
		first, second := alice.form("/docs", form), alice.form("/docs", form)
		sameAnswer(t, first, second)
		if n := docsTitled(t, ta, "Twice"); n != 1 {
			t.Fatalf("%d documents created; want 1", n)
		}
	})

	t.Run("save", func(t *testing.T) {
		// Last write wins: every save without a key is a new version.
		key := newFormKey()
		alice := ta.signIn(t, "alice")
		form := alice.withCSRF(url.Values{"title": {"Welcome"}, "body": {"once"}, "version": {"1"}, formKeyField: {key}})
		first, second := alice.form("/docs/welcome/save", form), alice.form("/docs/welcome/save", form)
		if first.StatusCode != http.StatusSeeOther {
			t.Fatalf("save: %d %s", first.StatusCode, first.body)
		}
		sameAnswer(t, first, second)
		d, err := ta.getDoc(t.Context(), ta.db, "welcome")
		if err != nil {
			t.Fatal(err)
		}
		if d.Version != 2 {
			t.Fatalf("version %d after the double submit; want 2 (one save)", d.Version)
		}
	})

	t.Run("break", func(t *testing.T) {
		// The holder takes the document again between the two submits:
		// the second must not break the new checkout.
		key := newFormKey()
		admin := ta.signIn(t, "admin")
		form := admin.withCSRF(url.Values{"reason": {"holiday"}, formKeyField: {key}})
		ta.call(t, "alice", "POST", "/api/documents/contract/checkout", "")
		first := admin.form("/docs/contract/break", form)
		if loc := first.Header.Get("Location"); loc != "/docs/contract?m=broken" {
			t.Fatalf("break: %d %q", first.StatusCode, loc)
		}
		tok := ta.call(t, "alice", "POST", "/api/documents/contract/checkout", "").json(t)["token"].(string)
		sameAnswer(t, first, admin.form("/docs/contract/break", form))
		if r := ta.call(t, "alice", "POST", "/api/documents/contract/checkout/heartbeat", "", "Checkout-Token: "+tok); r.StatusCode != http.StatusOK {
			t.Fatalf("the second submit broke the new checkout: heartbeat %d %s", r.StatusCode, r.body)
		}
		ta.call(t, "alice", "DELETE", "/api/documents/contract/checkout", "", "Checkout-Token: "+tok)
	})
}

// TestDoubleSubmitAPI: each non-idempotent POST of the API, sent twice with
// one Idempotency-Key, has one effect, and the second answer is the replay.
func TestDoubleSubmitAPI(t *testing.T) {
	ta := newTestApp(t, "")
	const p = "/api/documents/contract"
	const k = `Idempotency-Key: "k-1"`

	t.Run("checkout", func(t *testing.T) {
		// A late retry, after the checkout it took was released, must not
		// take a second one.
		first := ta.call(t, "alice", "POST", p+"/checkout", "", k)
		if first.StatusCode != http.StatusCreated {
			t.Fatalf("checkout: %d %s", first.StatusCode, first.body)
		}
		tok := first.json(t)["token"].(string)
		if r := ta.call(t, "alice", "DELETE", p+"/checkout", "", "Checkout-Token: "+tok); r.StatusCode != http.StatusNoContent {
			t.Fatalf("release: %d %s", r.StatusCode, r.body)
		}
		sameAnswer(t, first, ta.call(t, "alice", "POST", p+"/checkout", "", k))
		if r := ta.call(t, "alice", "GET", p+"/checkout", ""); r.StatusCode != http.StatusNotFound {
			t.Fatalf("the retry took a second checkout: %d %s", r.StatusCode, r.body)
		}
	})

	t.Run("break", func(t *testing.T) {
		ta.call(t, "alice", "POST", p+"/checkout", "")
		body := `{"reason":"holiday"}`
		first := ta.call(t, "admin", "POST", p+"/checkout/break", body, k)
		if first.StatusCode != http.StatusOK {
			t.Fatalf("break: %d %s", first.StatusCode, first.body)
		}
		tok := ta.call(t, "alice", "POST", p+"/checkout", "").json(t)["token"].(string)
		sameAnswer(t, first, ta.call(t, "admin", "POST", p+"/checkout/break", body, k))
		if r := ta.call(t, "alice", "POST", p+"/checkout/heartbeat", "", "Checkout-Token: "+tok); r.StatusCode != http.StatusOK {
			t.Fatalf("the retry broke the new checkout: heartbeat %d %s", r.StatusCode, r.body)
		}
	})

	t.Run("scoped to the user", func(t *testing.T) {
		// Bob's request, the same as alice's first one with her key, is
		// bob's own: alice holds the checkout, so 423, not her token.
		r := ta.call(t, "bob", "POST", p+"/checkout", "", k)
		if replayed(r) || r.StatusCode != http.StatusLocked {
			t.Fatalf("bob with alice's key: %d replayed %v %s", r.StatusCode, replayed(r), r.body)
		}
	})
}

// TestSignInIgnoresKeys: sign-in is not wrapped, so a key can neither replay
// a session nor let repeated guesses escape the backoff.
func TestSignInIgnoresKeys(t *testing.T) {
	clock := newFakeClock()
	ta := newTestAppWith(t, "", func(o *Options) { o.Now = clock.Now })
	anon := &browser{t: t, c: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, base: ta.srv.URL}
	login := func(pw string) response {
		t.Helper()
		return anon.form("/login", url.Values{"name": {"alice"}, "password": {pw}, formKeyField: {"same-key-every-time"}})
	}
	for i := range accountFreeFailures + 1 {
		if r := login("guess"); r.StatusCode != http.StatusUnauthorized || replayed(r) {
			t.Fatalf("failure %d: %d replayed %v", i, r.StatusCode, replayed(r))
		}
	}
	if r := login("alice"); r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("right password during the backoff, one key for every attempt: %d", r.StatusCode)
	}
	clock.Add(time.Hour)
	first, second := login("alice"), login("alice")
	if first.StatusCode != http.StatusSeeOther || second.StatusCode != http.StatusSeeOther || replayed(second) {
		t.Fatalf("sign-ins: %d, %d replayed %v", first.StatusCode, second.StatusCode, replayed(second))
	}
	if c1, c2 := first.Header.Get("Set-Cookie"), second.Header.Get("Set-Cookie"); c1 == c2 {
		t.Fatalf("two sign-ins got one session: %q", c1)
	}
}

// purgeEvents is a slog handler that sends the number of keys of every
// purge pass of the App's idempotency keys.
type purgeEvents chan int64

func (purgeEvents) Enabled(context.Context, slog.Level) bool { return true }
func (purgeEvents) WithAttrs([]slog.Attr) slog.Handler       { panic("unused") }
func (purgeEvents) WithGroup(string) slog.Handler            { panic("unused") }
func (ch purgeEvents) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "expired idempotency keys purged" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "n" {
			select {
			case ch <- a.Value.Int64():
			default: // the test is not listening
			}
		}
		return true
	})
	return nil
}

// TestPurgeWhileServing: expired keys are deleted periodically while the
// App serves, not only when it starts, and Close stops and waits for the
// purging goroutine.
func TestPurgeWhileServing(t *testing.T) {
	db, d, err := OpenDB(t.Context(), filepath.Join(t.TempDir(), "haita.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	before := goleak.IgnoreCurrent()
	events := make(purgeEvents, 16)
	app, err := New(t.Context(), Options{DB: db, Dialect: d, Seed: true, BcryptCost: bcrypt.MinCost,
		IdempotencyPurgeEvery: 10 * time.Millisecond, Logger: slog.New(events)})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	srv := httptest.NewServer(app)
	defer srv.Close()
	ta := &testApp{App: app, srv: srv}

	rows := func() int {
		t.Helper()
		var n int
		if err := db.QueryRowContext(t.Context(), "SELECT COUNT(*) FROM "+tIdempotency).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	wait := ctxTimeout(t, time.Minute) // a bound on a failure, not a speed check
	for i := range 2 {
		// A key stored by a request, then past its retention.
		r := ta.call(t, "alice", "POST", "/api/documents/contract/checkout", "", fmt.Sprintf(`Idempotency-Key: "purge-%d"`, i))
		if r.StatusCode != http.StatusCreated {
			t.Fatalf("checkout: %d %s", r.StatusCode, r.body)
		}
		if n := rows(); n != 1 {
			t.Fatalf("%d keys stored; want 1", n)
		}
		if _, err := db.ExecContext(t.Context(), "UPDATE "+tIdempotency+" SET expires_at = 0"); err != nil {
			t.Fatal(err)
		}
		for n := int64(0); n == 0; {
			select {
			case n = <-events:
			case <-wait.Done():
				t.Fatalf("pass %d: no purge pass removed the expired key", i)
			}
		}
		if n := rows(); n != 0 {
			t.Fatalf("pass %d: %d keys left; want 0", i, n)
		}
	}

	srv.Close()
	if err := app.Close(); err != nil {
		t.Fatal(err)
	}
	if err := goleak.Find(before); err != nil {
		t.Fatalf("after Close: %v", err)
	}
}

// TestFormsCarryKeys: every page form that posts to a route that honours
// idempotency keys carries one, fresh on every render.
func TestFormsCarryKeys(t *testing.T) {
	ta := newTestApp(t, "")
	alice, admin := ta.signIn(t, "alice"), ta.signIn(t, "admin")
	// A conflict page: a save based on version 1 after version 2.
	stale := alice.withCSRF(url.Values{"title": {"Price list"}, "body": {"mine"}, "version": {"1"}})
	if r := alice.form("/docs/price-list/save", stale); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("save: %d %s", r.StatusCode, r.body)
	}
	conflict := alice.form("/docs/price-list/save", stale)
	if conflict.StatusCode != http.StatusConflict {
		t.Fatalf("stale save: %d %s", conflict.StatusCode, conflict.body)
	}
	ta.call(t, "alice", "POST", "/api/documents/contract/checkout", "")
	pages := []struct {
		name  string
		body  []byte
		forms int // forms posting to a route that honours keys
	}{
		{"index", alice.get("/").body, 1},
		{"index again", alice.get("/").body, 1},
		{"edit", alice.get("/docs/welcome/edit").body, 1},
		{"edit again", alice.get("/docs/welcome/edit").body, 1},
		{"conflict", conflict.body, 2},
		{"view, administrator", admin.get("/docs/contract").body, 1},
	}
	formRE := regexp.MustCompile(`(?s)<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>`)
	keyRE := regexp.MustCompile(`name="` + formKeyField + `" value="([^"]*)"`)
	keyed := regexp.MustCompile(`^/docs(/[^/]+/(save|break))?$`)
	seen := map[string]string{}
	for _, p := range pages {
		n := 0
		for _, f := range formRE.FindAllStringSubmatch(string(p.body), -1) {
			if !keyed.MatchString(f[1]) {
				continue
			}
			n++
			m := keyRE.FindStringSubmatch(f[2])
			if m == nil || !formKeyRE.MatchString(m[1]) {
				t.Errorf("%s: the form to %s carries no valid key: %s", p.name, f[1], f[2])
				continue
			}
			if prev, ok := seen[m[1]]; ok {
				t.Errorf("%s: the form to %s has the key of a form on %s", p.name, f[1], prev)
			}
			seen[m[1]] = p.name
		}
		if n != p.forms {
			t.Errorf("%s: %d forms post to routes that honour keys; want %d", p.name, n, p.forms)
		}
	}
}

// TestDoubleSignOut: sign-out needs no key: the second of two posts with
// the same session cookie (a double click) gets the first's answer, the
// sign-in page, and changes nothing.
func TestDoubleSignOut(t *testing.T) {
	ta := newTestApp(t, "")
	alice := ta.signIn(t, "alice")
	u, err := url.Parse(ta.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	cookies := alice.c.Jar.Cookies(u)
	form := alice.withCSRF(url.Values{})
	first := alice.form("/logout", form)
	alice.c.Jar.SetCookies(u, cookies) // the second click sends the cookie again
	second := alice.form("/logout", form)
	for i, r := range []response{first, second} {
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/login" {
			t.Fatalf("sign-out %d: %d %q %s", i+1, r.StatusCode, r.Header.Get("Location"), r.body)
		}
	}
	if r := alice.get("/"); r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/login") {
		t.Fatalf("signed out, the index: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
}
