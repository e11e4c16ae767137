package webapp

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/haita/haita/checkout"
	"github.com/haita/haita/httpcc"
)

var pageNames = []string{"login", "index", "view", "edit", "conflict"}

func (a *App) loadTemplates() error {
	funcs := template.FuncMap{
		"clock":   func(t time.Time) string { return t.Local().Format("15:04") },
		"iso":     func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"formKey": newFormKey,
		"policyLabel": func(p string) string {
			switch p {
			case LastWriteWins:
				return "Last write wins"
			case Optimistic:
				return "Optimistic"
			case Pessimistic:
				return "Check-out"
			}
			return p
		},
	}
	a.pages = map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "assets/templates/layout.html", "assets/templates/"+name+".html")
		if err != nil {
			return fmt.Errorf("webapp: parse templates: %w", err)
		}
		a.pages[name] = t
	}
	return nil
}

// pageData is what every page template gets.
type pageData struct {
	Title   string
	User    *User
	CSRF    string
	Flash   string
	FlashOK bool
	Data    any
	// HeartbeatMS is how often an editing page sends a heartbeat.
	HeartbeatMS int64
}

func (a *App) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	pd := pageData{Title: title, Data: data, HeartbeatMS: a.opts.HeartbeatEvery.Milliseconds()}
	if p, ok := userOf(r); ok {
		pd.User = &p.User
		if p.Session != nil {
			pd.CSRF = p.Session.CSRF
		}
	}
	if m, ok := flashes[r.URL.Query().Get("m")]; ok {
		pd.Flash, pd.FlashOK = m.text, m.ok
	}
	var buf bytes.Buffer
	if err := a.pages[name].ExecuteTemplate(&buf, "layout", pd); err != nil {
		a.serverError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// flashes are the one-line messages a redirect can ask the next page to show.
var flashes = map[string]struct {
	text string
	ok   bool
}{
	"saved":    {"Saved.", true},
	"created":  {"Document created.", true},
	"released": {"Editing cancelled; the document is free again.", true},
	"broken":   {"Checkout broken. The former holder has been told.", true},
	"notheld":  {"Nobody holds this document now; there was no checkout to break.", false},
	"held":     {"Someone else is editing this document; try again when it is free.", false},
	"lost":     {"Your checkout ended before you saved.", false},
	"gone":     {"That document no longer exists.", false},
}

func redirect(w http.ResponseWriter, r *http.Request, path, flash string) {
	if flash != "" {
		path += "?m=" + flash
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
}

func (a *App) handleLoginForm(w http.ResponseWriter, r *http.Request) {
	if p, ok, _ := a.authenticate(r); ok && p.Session != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	a.render(w, r, http.StatusOK, "login", "Sign in", loginData{Next: safeNext(r.URL.Query().Get("next")), Demo: a.opts.Seed})
}

type loginData struct {
	Next, Name, Error string
	Demo              bool
}

// safeNext keeps a post-login redirect on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	return next
}

func (a *App) handleLogin(w http.ResponseWriter, r *http.Request) {
	name, pw := strings.TrimSpace(r.FormValue("name")), r.FormValue("password")
	next := safeNext(r.FormValue("next"))
	account, address := signInKeys(r, name)
	if d := a.throttle.wait(account, address); d > 0 {
		secs := int((d + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		a.render(w, r, http.StatusTooManyRequests, "login", "Sign in", loginData{Next: next, Name: name, Demo: a.opts.Seed,
			Error: fmt.Sprintf("Too many failed sign-ins. Try again in %d seconds.", secs)})
		return
	}
	u, err := a.login(r.Context(), name, pw)
	if errors.Is(err, errBadLogin) {
		a.throttle.failed(account, accountFreeFailures)
		a.throttle.failed(address, addressFreeFailures)
		a.render(w, r, http.StatusUnauthorized, "login", "Sign in", loginData{Next: next, Name: name, Error: "Wrong name or password.", Demo: a.opts.Seed})
		return
	}
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	a.throttle.succeeded(account)
	id, err := a.newSession(r.Context(), u.Name)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: a.opts.SecureCookies,
		SameSite: http.SameSiteLaxMode, MaxAge: int(a.opts.SessionTTL.Seconds())})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// signOut serves POST /logout: handleLogout for a signed-in session. A
// request whose session has ended already (the second click of a double
// click on "Sign out", a resubmitted form) gets the same answer as the
// first, the sign-in page, and changes nothing.
func (a *App) signOut(w http.ResponseWriter, r *http.Request) {
	if p, ok, err := a.authenticate(r); err == nil && (!ok || p.Session == nil) {
		a.signedOut(w, r)
		return
	}
	a.page(a.handleLogout)(w, r)
}

// signedOut clears the session cookie and sends the browser to the sign-in
// page.
func (a *App) signedOut(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: a.opts.SecureCookies,
		SameSite: http.SameSiteLaxMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// handleLogout ends the session and every checkout its user holds.
func (a *App) handleLogout(w http.ResponseWriter, r *http.Request) {
	p, _ := userOf(r)
	if _, err := a.co.ReleaseOwner(r.Context(), p.User.Name); err != nil {
		a.serverError(w, r, err)
		return
	}
	a.changed()
	if c, err := r.Cookie(sessionCookie); err == nil {
		if err := a.deleteSession(r.Context(), c.Value); err != nil {
			a.serverError(w, r, err)
			return
		}
	}
	a.signedOut(w, r)
}

// docRow is a document with its checkout, for the pages.
type docRow struct {
	Document
	Checkout *checkoutJSON
	Mine     bool
}

func (a *App) docRow(r *http.Request, d Document) (docRow, error) {
	row := docRow{Document: d}
	if d.Policy == Pessimistic {
		c, ok, err := a.co.Get(r.Context(), d.ID)
		if err != nil {
			return row, err
		}
		if ok {
			p, _ := userOf(r)
			row.Checkout, row.Mine = a.toCheckoutJSON(c, false), c.Owner == p.User.Name
		}
	}
	return row, nil
}

func (a *App) handleIndex(w http.ResponseWriter, r *http.Request) {
	docs, err := a.listDocs(r.Context())
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	rows := make([]docRow, 0, len(docs))
	for _, d := range docs {
		row, err := a.docRow(r, d)
		if err != nil {
			a.serverError(w, r, err)
			return
		}
		rows = append(rows, row)
	}
	a.render(w, r, http.StatusOK, "index", "Documents", rows)
}

var slugRE = regexp.MustCompile(`[^a-z0-9]+`)

func (a *App) handleCreateForm(w http.ResponseWriter, r *http.Request) {
	p, _ := userOf(r)
	title := strings.TrimSpace(r.FormValue("title"))
	slug := strings.Trim(slugRE.ReplaceAllString(strings.ToLower(title), "-"), "-")
	if len(slug) > 40 {
		slug = strings.Trim(slug[:40], "-")
	}
	if slug == "" {
		slug = "doc"
	}
	d := Document{ID: slug, Title: title, Policy: r.FormValue("policy"), Body: ""}
	for i := 0; ; i++ {
		created, err := a.createDoc(r.Context(), p.User.Name, d)
		var ce *conflictError
		if errors.As(err, &ce) && i < 5 {
			d.ID = slug + "-" + strings.ToLower(randomToken()[:4])
			continue
		}
		if errors.Is(err, errInvalid) {
			http.Error(w, strings.TrimPrefix(err.Error(), "webapp: invalid input: "), http.StatusUnprocessableEntity)
			return
		}
		if err != nil {
			a.serverError(w, r, err)
			return
		}
		redirect(w, r, "/docs/"+created.ID+"/edit", "created")
		return
	}
}

func (a *App) handleView(w http.ResponseWriter, r *http.Request) {
	d, err := a.getDoc(r.Context(), a.db, r.PathValue("id"))
	if errors.Is(err, errNotFound) {
		redirect(w, r, "/", "gone")
		return
	}
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	row, err := a.docRow(r, d)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	a.render(w, r, http.StatusOK, "view", d.Title, row)
}

// editData is the edit form.
type editData struct {
	docRow
	Token   string // checkout token (pessimistic)
	Body    string // the text in the editor
	Version int64  // the version the editor started from
}

// handleEdit shows the editor. For a pessimistic document it checks the
// document out first (renewing the checkout if the user holds it already):
// if someone else holds it, it goes back to the document page, which shows
// who and until when.
func (a *App) handleEdit(w http.ResponseWriter, r *http.Request) {
	p, _ := userOf(r)
	d, err := a.getDoc(r.Context(), a.db, r.PathValue("id"))
	if errors.Is(err, errNotFound) {
		redirect(w, r, "/", "gone")
		return
	}
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	ed := editData{docRow: docRow{Document: d}, Body: d.Body, Version: d.Version}
	if d.Policy == Pessimistic {
		c, err := a.co.Acquire(r.Context(), d.ID, p.User.Name)
		if errors.Is(err, checkout.ErrHeld) {
			redirect(w, r, "/docs/"+d.ID, "held")
			return
		}
		if err != nil {
			a.serverError(w, r, err)
			return
		}
		a.bump(r.Context(), d.ID)
		ed.Token, ed.Checkout, ed.Mine = c.Token, a.toCheckoutJSON(c, false), true
		// The checkout guarantees nobody saved since it was taken; read
		// again so the editor starts from the text as of the checkout.
		if d, err = a.getDoc(r.Context(), a.db, d.ID); err != nil {
			a.serverError(w, r, err)
			return
		}
		ed.Document, ed.Body, ed.Version = d, d.Body, d.Version
	}
	a.render(w, r, http.StatusOK, "edit", "Edit "+d.Title, ed)
}

// conflictData is the conflict screen: theirs beside yours.
type conflictData struct {
	Theirs    Document
	Yours     string
	Title     string
	Rows      []sideRow
	Merge     string
	Lost      string // set when a checkout ended: why
	Token     string
	Policy    string
	Identical bool
}

// handleSave saves the editor's text under the document's policy.
func (a *App) handleSave(w http.ResponseWriter, r *http.Request) {
	p, _ := userOf(r)
	id := r.PathValue("id")
	title, body := strings.TrimSpace(r.FormValue("title")), strings.ReplaceAll(r.FormValue("body"), "\r\n", "\n")
	version, _ := strconv.ParseInt(r.FormValue("version"), 10, 64)
	token := r.FormValue("token")
	cur, err := a.getDoc(r.Context(), a.db, id)
	if errors.Is(err, errNotFound) {
		redirect(w, r, "/", "gone")
		return
	}
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	in := saveInput{Title: &title, Body: &body, Token: token}
	switch cur.Policy {
	case Optimistic:
		if version <= 0 {
			http.Error(w, "The form carries no version.", http.StatusBadRequest)
			return
		}
		in.Expect = version
	case Pessimistic:
		in.Expect = version
	}
	saved, err := a.saveDoc(r.Context(), p.User.Name, id, in)
	var (
		ce *conflictError
		le *httpcc.LockedError
		ke *checkoutError
	)
	switch {
	case err == nil:
		if cur.Policy == Pessimistic {
			if rerr := a.co.Release(r.Context(), id, token); rerr != nil && !isCheckoutLost(rerr) {
				a.log.Warn("release after save", "doc", id, "err", rerr)
			}
			a.bump(r.Context(), id)
		}
		redirect(w, r, "/docs/"+saved.ID, "saved")
	case errors.As(err, &ce):
		ops := lineDiff(ce.Current.Body, body)
		cd := conflictData{Theirs: ce.Current, Yours: body, Title: title, Rows: sideBySide(ops),
			Merge:  mergeDraft(ops, ce.Current.UpdatedBy+" (version "+strconv.FormatInt(ce.Current.Version, 10)+")"),
			Policy: cur.Policy, Token: token, Identical: ce.Current.Body == body}
		a.render(w, r, http.StatusConflict, "conflict", "Conflict: "+cur.Title, cd)
	case errors.As(err, &le), errors.As(err, &ke):
		cd := conflictData{Theirs: cur, Yours: body, Title: title, Policy: cur.Policy, Lost: lostReason(err)}
		a.render(w, r, http.StatusConflict, "conflict", "Not saved: "+cur.Title, cd)
	case errors.Is(err, errCheckoutRequired):
		cd := conflictData{Theirs: cur, Yours: body, Title: title, Policy: cur.Policy, Lost: "You had not checked this document out."}
		a.render(w, r, http.StatusConflict, "conflict", "Not saved: "+cur.Title, cd)
	case errors.Is(err, errInvalid):
		http.Error(w, strings.TrimPrefix(err.Error(), "webapp: invalid input: "), http.StatusUnprocessableEntity)
	default:
		a.serverError(w, r, err)
	}
}

func lostReason(err error) string {
	var (
		be *checkout.BrokenError
		le *httpcc.LockedError
	)
	switch {
	case errors.As(err, &le):
		return fmt.Sprintf("Your checkout ended and %s is editing the document now.", le.Holder)
	case errors.As(err, &be):
		s := fmt.Sprintf("%s broke your checkout at %s.", be.By, be.At.Local().Format("15:04"))
		if be.Reason != "" {
			s += " Reason: " + be.Reason
		}
		return s
	case errors.Is(err, checkout.ErrExpired):
		return "Your checkout expired (no heartbeat from your page, or it reached its maximum age)."
	}
	return "Your checkout is no longer valid."
}

// handleRelease ends the user's checkout: the Cancel button, and the
// beacon the editing page sends when it goes away.
func (a *App) handleRelease(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	p, _ := userOf(r)
	if tok := r.FormValue("token"); tok != "" {
		// A token releases only its owner's checkout.
		owner, ok, err := a.tokenOwner(r.Context(), a.db, id, tok)
		if err != nil {
			a.serverError(w, r, err)
			return
		}
		if ok && owner != p.User.Name {
			redirect(w, r, "/docs/"+id, "held")
			return
		}
		if err := a.co.Release(r.Context(), id, tok); err != nil && !isCheckoutLost(err) && !errors.Is(err, checkout.ErrInvalid) {
			a.serverError(w, r, err)
			return
		}
		a.bump(r.Context(), id)
	}
	redirect(w, r, "/docs/"+id, "released")
}

// handleBreak lets an administrator end someone's checkout.
func (a *App) handleBreak(w http.ResponseWriter, r *http.Request) {
	p, _ := userOf(r)
	if !p.User.Admin {
		http.Error(w, "Only an administrator can break a checkout.", http.StatusForbidden)
		return
	}
	id := r.PathValue("id")
	reason := strings.TrimSpace(r.FormValue("reason"))
	if len(reason) > 500 {
		reason = reason[:500]
	}
	_, err := a.co.Break(r.Context(), id, p.User.Name, reason)
	if errors.Is(err, checkout.ErrNotHeld) {
		redirect(w, r, "/docs/"+id, "notheld")
		return
	}
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	a.bump(r.Context(), id)
	redirect(w, r, "/docs/"+id, "broken")
}
