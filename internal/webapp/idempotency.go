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

// tIdempotency is the table of the idempotency keys of the requests that
// create documents, save them, take and break checkouts.
const tIdempotency = "haita_idempotency"

// formKeyField is the hidden form field that carries a page's idempotency
// key; formKeyRE is what the App accepts in it (the pages write 26
// characters of base32).
const formKeyField = "idempotency_key"

var formKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)

// idemState is what the App needs to honour idempotency keys: the
// middleware for form posts (page), the one for API requests (api), and the
// store whose expired keys [App.purgeKeys] deletes.
type idemState struct {
	page, api func(http.Handler) http.Handler
	store     *idempotency.SQLStore
}

// setupIdempotency creates the idempotency table and the middleware that
// [App.idempotent] and [App.idempotentAPI] apply.
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
	// Keys are scoped to the signed-in user: the middleware runs inside
	// a.page or a.api.
	scope := func(r *http.Request) string { p, _ := userOf(r); return p.User.Name }
	a.idem.store = store
	a.idem.page, err = idempotency.Middleware(r, idempotency.HTTPOptions{
		// Form posts: a double click waits for the first click's result
		// page instead of showing an error.
		Wait:   true,
		Scope:  scope,
		Logger: a.log,
	})
	if err != nil {
		return fmt.Errorf("webapp: %w", err)
	}
	// API clients get 409 while the first request runs, as the draft says.
	a.idem.api, err = idempotency.Middleware(r, idempotency.HTTPOptions{Scope: scope, Logger: a.log})
	if err != nil {
		return fmt.Errorf("webapp: %w", err)
	}
	// Keys are kept for a day. The ones past that are purged at every
	// start, and every Options.IdempotencyPurgeEvery by purgeKeys.
	if _, err := store.Purge(ctx); err != nil {
		return fmt.Errorf("webapp: %w", err)
	}
	return nil
}

// purgeKeys deletes expired idempotency keys every
// Options.IdempotencyPurgeEvery until ctx ends. A failed pass is logged and
// the next one tries again.
func (a *App) purgeKeys(ctx context.Context) {
	t := time.NewTicker(a.opts.IdempotencyPurgeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := a.idem.store.Purge(ctx)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Error("purging expired idempotency keys failed", "err", err)
			}
			continue
		}
		a.log.Debug("expired idempotency keys purged", "n", n)
	}
}

// idempotent makes h honour an idempotency key: the Idempotency-Key header
// (API clients), or the hidden form field idempotency_key that the page
// forms posting to h carry, so that a double click or a resubmitted form
// has one effect: one document, one save, one break. A request without a key runs h as before. A
// concurrent duplicate waits for the first one's response. It runs inside
// a.page, so keys are scoped to the signed-in user.
func (a *App) idempotent(h http.HandlerFunc) http.HandlerFunc {
	wrapped := a.idem.page(h)
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

// idempotentAPI makes the API handler h honour the Idempotency-Key header:
// a retry gets the first response replayed, a concurrent duplicate 409. It
// runs inside a.api, so keys are scoped to the authenticated user.
func (a *App) idempotentAPI(h http.HandlerFunc) http.HandlerFunc {
	return a.idem.api(h).ServeHTTP
}

// newFormKey returns a fresh key for a form's idempotency_key field.
func newFormKey() string { return randomToken() }
