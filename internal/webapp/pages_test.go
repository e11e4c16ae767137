package webapp

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestPagesSignIn(t *testing.T) {
	ta := newTestApp(t, "")
	var anon browser
	anon.t, anon.c, anon.base = t, &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, ta.srv.URL
	if r := anon.get("/docs/contract"); r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/login?next=%2Fdocs%2Fcontract") {
		t.Fatalf("anonymous page: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	if r := anon.form("/login", url.Values{"name": {"alice"}, "password": {"wrong"}}); r.StatusCode != http.StatusUnauthorized || !strings.Contains(string(r.body), "Wrong name or password") {
		t.Fatalf("wrong password: %d", r.StatusCode)
	}
	if r := anon.form("/login", url.Values{"name": {"nobody"}, "password": {"x"}}); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unknown user: %d", r.StatusCode)
	}
	r := anon.form("/login", url.Values{"name": {"alice"}, "password": {"alice"}, "next": {"//evil.example/"}})
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/" {
		t.Fatalf("login redirect: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	c := r.Cookies()[0]
	if c.Name != sessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
		t.Fatalf("session cookie %+v", c)
	}
	if r := anon.form("/docs/welcome/save", url.Values{"body": {"x"}}); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous form post: %d", r.StatusCode)
	}
	b := ta.signIn(t, "alice")
	home := b.get("/")
	for _, want := range []string{"Supplier contract", "Last write wins", "Optimistic", "Check-out", "Alice"} {
		if !strings.Contains(string(home.body), want) {
			t.Errorf("home page lacks %q", want)
		}
	}
	if r := b.form("/logout", b.withCSRF(url.Values{})); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.StatusCode)
	}
	if r := b.get("/"); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("after logout: %d", r.StatusCode)
	}
}

func TestPagesOptimisticConflict(t *testing.T) {
	ta := newTestApp(t, "")
	alice, bob := ta.signIn(t, "alice"), ta.signIn(t, "bob")
	if r := alice.get("/docs/price-list/edit"); r.StatusCode != 200 || !strings.Contains(string(r.body), `name="version" value="1"`) {
		t.Fatalf("edit page: %d", r.StatusCode)
	}
	r := alice.form("/docs/price-list/save", alice.withCSRF(url.Values{"title": {"Price list"}, "body": {"Coffee 3.50\nTea 2.80\n"}, "version": {"1"}}))
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/docs/price-list?m=saved" {
		t.Fatalf("alice saves: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	// Bob edited version 1 too.
	r = bob.form("/docs/price-list/save", bob.withCSRF(url.Values{"title": {"Price list"}, "body": {"Coffee 3.20\nTea 3.00\n"}, "version": {"1"}}))
	page := string(r.body)
	if r.StatusCode != http.StatusConflict || !strings.Contains(page, "Someone saved first") || !strings.Contains(page, "Coffee 3.50") || !strings.Contains(page, "Tea 3.00") {
		t.Fatalf("conflict page: %d %s", r.StatusCode, page)
	}
	if !strings.Contains(page, "&lt;&lt;&lt;&lt;&lt;&lt;&lt; alice (version 2)") {
		t.Errorf("no merge draft: %s", page)
	}
	// Nothing was overwritten.
	if d := ta.call(t, "bob", "GET", "/api/documents/price-list", "").json(t); d["body"] != "Coffee 3.50\nTea 2.80\n" {
		t.Fatalf("after conflict: %v", d["body"])
	}
	// Bob merges by hand against version 2.
	r = bob.form("/docs/price-list/save", bob.withCSRF(url.Values{"title": {"Price list"}, "body": {"Coffee 3.50\nTea 3.00\n"}, "version": {"2"}}))
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("merge save: %d %s", r.StatusCode, r.body)
	}
	if d := ta.call(t, "bob", "GET", "/api/documents/price-list", "").json(t); d["body"] != "Coffee 3.50\nTea 3.00\n" || d["version"] != 3.0 {
		t.Fatalf("after merge: %v", d)
	}
	// Last write wins: a save from an old version replaces.
	r = bob.form("/docs/welcome/save", bob.withCSRF(url.Values{"title": {"Welcome"}, "body": {"b"}, "version": {"1"}}))
	r2 := alice.form("/docs/welcome/save", alice.withCSRF(url.Values{"title": {"Welcome"}, "body": {"a"}, "version": {"1"}}))
	if r.StatusCode != http.StatusSeeOther || r2.StatusCode != http.StatusSeeOther {
		t.Fatalf("last write wins saves: %d %d", r.StatusCode, r2.StatusCode)
	}
	// Creating a document.
	r = alice.form("/docs", alice.withCSRF(url.Values{"title": {"Price list"}, "policy": {"pessimistic"}}))
	if r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/docs/price-list-") {
		t.Fatalf("create: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	if r = alice.form("/docs", alice.withCSRF(url.Values{"title": {"X"}, "policy": {"nope"}})); r.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("create with a bad policy: %d", r.StatusCode)
	}
}

func TestPagesCheckout(t *testing.T) {
	ta := newTestApp(t, "")
	alice, bob, admin := ta.signIn(t, "alice"), ta.signIn(t, "bob"), ta.signIn(t, "admin")
	r := alice.get("/docs/contract/edit")
	if r.StatusCode != 200 || !strings.Contains(string(r.body), `data-token="`) {
		t.Fatalf("alice edits: %d", r.StatusCode)
	}
	page := string(r.body)
	i := strings.Index(page, `name="token" value="`) + len(`name="token" value="`)
	token := page[i : i+strings.IndexByte(page[i:], '"')]

	if r := bob.get("/docs/contract/edit"); r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/docs/contract?m=held" {
		t.Fatalf("bob edits: %d %s", r.StatusCode, r.Header.Get("Location"))
	}
	if r := bob.get("/docs/contract?m=held"); !strings.Contains(string(r.body), "Being edited by <b data-f=\"owner\">alice</b>") {
		t.Fatalf("no banner: %s", r.body)
	}
	if r := bob.form("/docs/contract/break", bob.withCSRF(url.Values{})); r.StatusCode != http.StatusForbidden {
		t.Fatalf("bob breaks: %d", r.StatusCode)
	}
	if r := admin.form("/docs/contract/break", admin.withCSRF(url.Values{"reason": {"urgent fix"}})); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("admin breaks: %d", r.StatusCode)
	}
	r = alice.form("/docs/contract/save", alice.withCSRF(url.Values{"title": {"C"}, "body": {"late"}, "version": {"1"}, "token": {token}}))
	if r.StatusCode != http.StatusConflict || !strings.Contains(string(r.body), "admin broke your checkout") || !strings.Contains(string(r.body), "urgent fix") {
		t.Fatalf("save after break: %d %s", r.StatusCode, r.body)
	}
	// Bob checks out, saves (which releases), alice can edit again.
	r = bob.get("/docs/contract/edit")
	page = string(r.body)
	i = strings.Index(page, `name="token" value="`) + len(`name="token" value="`)
	btok := page[i : i+strings.IndexByte(page[i:], '"')]
	if r := bob.form("/docs/contract/save", bob.withCSRF(url.Values{"title": {"C"}, "body": {"bob"}, "version": {"1"}, "token": {btok}})); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("bob saves: %d %s", r.StatusCode, r.body)
	}
	if _, ok, _ := ta.co.Get(t.Context(), "contract"); ok {
		t.Fatal("save did not release the checkout")
	}
	// Cancel (and the page's beacon) releases.
	r = alice.get("/docs/contract/edit")
	page = string(r.body)
	i = strings.Index(page, `name="token" value="`) + len(`name="token" value="`)
	atok := page[i : i+strings.IndexByte(page[i:], '"')]
	if r := alice.form("/docs/contract/release", alice.withCSRF(url.Values{"token": {atok}})); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("release: %d", r.StatusCode)
	}
	if _, ok, _ := ta.co.Get(t.Context(), "contract"); ok {
		t.Fatal("cancel did not release the checkout")
	}
	// Logout releases every checkout of the user.
	alice.get("/docs/contract/edit")
	alice.get("/docs/handbook/edit")
	alice.form("/logout", alice.withCSRF(url.Values{}))
	for _, id := range []string{"contract", "handbook"} {
		if _, ok, _ := ta.co.Get(t.Context(), id); ok {
			t.Fatalf("logout did not release %s", id)
		}
	}
}

func TestLineDiff(t *testing.T) {
	ops := lineDiff("a\nb\nc\nd\n", "a\nB\nc\nd\ne\n")
	var got []string
	for _, o := range ops {
		got = append(got, string(o.Kind)+o.Text)
	}
	if want := "=a -b +B =c =d +e"; strings.Join(got, " ") != want {
		t.Fatalf("diff %q, want %q", strings.Join(got, " "), want)
	}
	rows := sideBySide(ops)
	if len(rows) != 5 || !rows[1].Changed || *rows[1].Left != "b" || *rows[1].Right != "B" || rows[4].Left != nil {
		t.Fatalf("side by side %+v", rows)
	}
	if m := mergeDraft(ops, "alice"); m != "a\n<<<<<<< alice\nb\n=======\nB\n>>>>>>> yours\nc\nd\n<<<<<<< alice\n=======\ne\n>>>>>>> yours\n" {
		t.Fatalf("merge draft %q", m)
	}
	if ops := lineDiff("", ""); len(ops) != 0 {
		t.Fatalf("empty diff %v", ops)
	}
}
