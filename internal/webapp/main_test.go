package webapp

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/haita/haita/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// testApp is an App on a fresh database behind a real loopback server.
type testApp struct {
	*App
	srv *httptest.Server
}

func newTestApp(t testing.TB, dsn string) *testApp {
	t.Helper()
	return newTestAppWith(t, dsn, nil)
}

// newTestAppWith is newTestApp with the options changed by edit.
func newTestAppWith(t testing.TB, dsn string, edit func(*Options)) *testApp {
	t.Helper()
	if dsn == "" {
		dsn = filepath.Join(t.TempDir(), "haita.db")
	}
	db, d, err := OpenDB(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	opts := Options{DB: db, Dialect: d, Seed: true, BcryptCost: bcrypt.MinCost,
		PollInterval: 50 * time.Millisecond, HeartbeatEvery: 500 * time.Millisecond, CheckoutIdle: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if edit != nil {
		edit(&opts)
	}
	app, err := New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app)
	t.Cleanup(func() {
		app.CloseStreams()
		srv.Close()
		app.Close()
	})
	return &testApp{App: app, srv: srv}
}

// response is a finished response with its body read.
type response struct {
	*http.Response
	body []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, r.body)
	}
	return m
}

// call sends one request. header holds "Name: value" lines; a user name in
// as sends that demo user's API token.
func (ta *testApp) call(t testing.TB, as, method, path, body string, header ...string) response {
	t.Helper()
	return doReq(t, ta.srv.Client(), ta.srv.URL, as, method, path, body, header...)
}

func doReq(t testing.TB, c *http.Client, base, as, method, path, body string, header ...string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if as != "" {
		req.Header.Set("Authorization", "Bearer "+DemoToken(as))
	}
	for _, h := range header {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp, b}
}

// browser is a signed-in cookie session.
type browser struct {
	t    testing.TB
	c    *http.Client
	base string
	csrf string
}

func (ta *testApp) signIn(t testing.TB, name string) *browser {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	b := &browser{t: t, c: c, base: ta.srv.URL}
	r := b.form("/login", url.Values{"name": {name}, "password": {name}})
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in as %s: %d %s", name, r.StatusCode, r.body)
	}
	page := b.get("/")
	const marker = `name="csrf-token" content="`
	i := strings.Index(string(page.body), marker)
	if i < 0 {
		t.Fatalf("no CSRF token on the page: %s", page.body)
	}
	rest := string(page.body[i+len(marker):])
	b.csrf = rest[:strings.IndexByte(rest, '"')]
	return b
}

func (b *browser) get(path string) response {
	b.t.Helper()
	return doReq(b.t, b.c, b.base, "", http.MethodGet, path, "")
}

// form posts a form the way a same-origin page does.
func (b *browser) form(path string, v url.Values) response {
	b.t.Helper()
	req, err := http.NewRequestWithContext(b.t.Context(), http.MethodPost, b.base+path, strings.NewReader(v.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return response{resp, body}
}

// withCSRF adds the session's CSRF token to a form.
func (b *browser) withCSRF(v url.Values) url.Values {
	v.Set("csrf", b.csrf)
	return v
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
