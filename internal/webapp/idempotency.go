package webapp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/haita/haita/idempotency"
)

// tIdempotency is the table of the idempotency keys of requests that create
// documents.
const tIdempotency = "haita_idempotency"

// formKeyField is the hidden form field that carries a page's idempotency
// key; formKeyRE is what the App accepts in it (the pages write 26
// characters of base32).
const formKeyField = "idempotency_key"

var formKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)

// setupIdempotency creates the idempotency table and the middleware that
// [App.idempotent] applies.
func (a *App) setupIdempotency(ctx context.Context) error {
	store, err := idempotency.NewSQLStore(a.db, idempotency.SQLOptions{Table: tIdempotency, Dialect: a.dialect})
	if err != nil {
		return fmt.Errorf("webapp: %w", err)
	}
	if err := store.CreateTable(ctx); err != nil {
		return fmt.Errorf("webapp: %w", err)
	}
	r, err := idempotency.New(store, idempotency.Options{Lease: 30 * time.Second, Retention: 24 * time.Hour})
	if err != nil {
		return fmt.Errorf("webapp: %w", err)
	}
	a.idem, err = idempotency.Middleware(r, idempotency.HTTPOptions{
		// Form posts: a double click waits for the first click's result
		// page instead of showing an error.
		Wait:   true,
		Scope:  func(r *http.Request) string { p, _ := userOf(r); return p.User.Name },
		Logger: a.log,
	})
	if err != nil {
		return fmt.Errorf("webapp: %w", err)
	}
	// Keys are kept for a day; the ones past that are purged at every
	// start (a long-running server would also purge periodically).
	if _, err := store.Purge(ctx); err != nil {
		return fmt.Errorf("webapp: %w", err)
	}
	return nil
}

// idempotent makes h honour an idempotency key: the Idempotency-Key header
// (API clients), or the hidden form field idempotency_key that every page
// form carries, so that a double click or a resubmitted form creates one
// document. A request without a key runs h as before. It runs inside
// a.page or a.api, so keys are scoped to the signed-in user.
func (a *App) idempotent(h http.HandlerFunc) http.HandlerFunc {
	wrapped := a.idem(h)
	return func(w http.ResponseWriter, r *http.Request) {
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if r.Header.Get(idempotency.HeaderKey) == "" && mt == "application/x-www-form-urlencoded" {
			// a.page has parsed the form already (for its CSRF field); the
			// middleware fingerprints its canonical encoding.
			form := r.PostForm
			if form == nil {
				body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
				if err != nil {
					http.Error(w, "The form is too large.", http.StatusRequestEntityTooLarge)
					return
				}
				if form, err = url.ParseQuery(string(body)); err != nil {
					http.Error(w, "The form is malformed.", http.StatusBadRequest)
					return
				}
			}
			r = r.Clone(r.Context())
			r.Body = io.NopCloser(bytes.NewReader([]byte(form.Encode())))
			if k := form.Get(formKeyField); formKeyRE.MatchString(k) {
				r.Header.Set(idempotency.HeaderKey, `"`+k+`"`)
			}
		}
		wrapped.ServeHTTP(w, r)
	}
}

// newFormKey returns a fresh key for a form's idempotency_key field.
func newFormKey() string { return randomToken() }
