package webapp

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

const sessionCookie = "haita_session"

type ctxKey int

const (
	keyUser ctxKey = iota
	keySession
)

// principal is who made a request: a user, and the session if it came
// through a browser session rather than an API token.
type principal struct {
	User    User
	Session *session
}

func userOf(r *http.Request) (principal, bool) {
	p, ok := r.Context().Value(keyUser).(principal)
	return p, ok
}

func (a *App) routes() (http.Handler, error) {
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		return nil, err
	}
	a.static = static
	mux := http.NewServeMux()

	// Pages.
	mux.HandleFunc("GET /{$}", a.page(a.handleIndex))
	mux.HandleFunc("GET /login", a.handleLoginForm)
	mux.HandleFunc("POST /login", a.handleLogin)
	mux.HandleFunc("POST /logout", a.signOut)
	mux.HandleFunc("POST /docs", a.page(a.idempotent(a.handleCreateForm)))
	mux.HandleFunc("GET /docs/{id}", a.page(a.handleView))
	mux.HandleFunc("GET /docs/{id}/edit", a.page(a.handleEdit))
	mux.HandleFunc("POST /docs/{id}/save", a.page(a.idempotent(a.handleSave)))
	mux.HandleFunc("POST /docs/{id}/release", a.page(a.handleRelease))
	mux.HandleFunc("POST /docs/{id}/break", a.page(a.idempotent(a.handleBreak)))
	mux.HandleFunc("GET /events", a.api(a.handleEvents))
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticHandler(static)))

	// API.
	mux.HandleFunc("GET /api/openapi.json", a.handleOpenAPI)
	mux.HandleFunc("GET /api/me", a.api(a.apiMe))
	mux.HandleFunc("GET /api/documents", a.api(a.apiList))
	mux.HandleFunc("GET /api/documents/{id}", a.api(a.apiGet))
	mux.HandleFunc("PUT /api/documents/{id}", a.api(a.apiPut))
	mux.HandleFunc("DELETE /api/documents/{id}", a.api(a.apiDelete))
	mux.HandleFunc("GET /api/documents/{id}/checkout", a.api(a.apiGetCheckout))
	mux.HandleFunc("POST /api/documents/{id}/checkout", a.api(a.idempotentAPI(a.apiAcquire)))
	mux.HandleFunc("DELETE /api/documents/{id}/checkout", a.api(a.apiRelease))
	mux.HandleFunc("POST /api/documents/{id}/checkout/heartbeat", a.api(a.apiHeartbeat))
	mux.HandleFunc("POST /api/documents/{id}/checkout/break", a.api(a.idempotentAPI(a.apiBreak)))
	mux.HandleFunc("GET /api/problems/{type}", a.handleProblemType)
	// Other methods on the API's paths: 405 with Allow, not 404.
	mux.HandleFunc("/api/documents/{id}", methodNotAllowed("GET, HEAD, PUT, DELETE"))
	mux.HandleFunc("/api/documents/{id}/checkout", methodNotAllowed("GET, HEAD, POST, DELETE"))
	mux.HandleFunc("/api/documents/{id}/checkout/heartbeat", methodNotAllowed("POST"))
	mux.HandleFunc("/api/documents/{id}/checkout/break", methodNotAllowed("POST"))
	mux.HandleFunc("/api/documents", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		problem(w, ptNoEndpoint, "no such API endpoint: "+r.Method+" "+r.URL.Path, nil)
	})

	// Cross-origin protection (Sec-Fetch-Site / Origin) rejects every
	// state-changing browser request from another origin; the per-session
	// CSRF token checked in a.page and a.api is a second line for browsers
	// that send neither header.
	cop := http.NewCrossOriginProtection()
	for _, o := range a.opts.TrustedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			return nil, err
		}
	}
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		problem(w, ptCrossOrigin, "cross-origin request refused", nil)
	}))
	return securityHeaders(cop.Handler(mux)), nil
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		next.ServeHTTP(w, r)
	})
}

// staticHandler serves the files of static, and no directory listings.
func staticHandler(static fs.FS) http.Handler {
	fsrv := http.FileServerFS(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if name := strings.TrimPrefix(r.URL.Path, "/"); name == "" || strings.HasSuffix(name, "/") {
			http.NotFound(w, r)
			return
		}
		if fi, err := fs.Stat(static, strings.TrimPrefix(r.URL.Path, "/")); err == nil && fi.IsDir() {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		fsrv.ServeHTTP(w, r)
	})
}

func unsafeMethod(m string) bool {
	return m != http.MethodGet && m != http.MethodHead && m != http.MethodOptions
}

// authenticate finds the user of r: an "Authorization: Bearer" API token, or
// the session cookie.
func (a *App) authenticate(r *http.Request) (principal, bool, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return principal{}, false, nil
		}
		u, ok, err := a.userByToken(r.Context(), strings.TrimSpace(tok))
		return principal{User: u}, ok, err
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return principal{}, false, nil
	}
	s, ok, err := a.getSession(r.Context(), c.Value)
	if !ok || err != nil {
		return principal{}, false, err
	}
	return principal{User: s.User, Session: &s}, true, nil
}

// csrfOK reports whether a session request that changes state carries the
// session's CSRF token (form field "csrf" or header X-CSRF-Token). API-token
// requests carry no ambient credentials and need none.
func csrfOK(r *http.Request, p principal) bool {
	if p.Session == nil || !unsafeMethod(r.Method) {
		return true
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.FormValue("csrf")
	}
	return equalSecret(tok, p.Session.CSRF)
}

// api wraps an API handler: 401 without credentials, 403 without the CSRF
// token on a session request that changes state.
func (a *App) api(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok, err := a.authenticate(r)
		if err != nil {
			a.serverError(w, r, err)
			return
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="haita"`)
			problem(w, ptUnauthorized, "sign in, or send Authorization: Bearer <your API token>", nil)
			return
		}
		if !csrfOK(r, p) {
			problem(w, ptCSRF, "missing or wrong CSRF token (send the X-CSRF-Token header)", nil)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), keyUser, p)))
	}
}

// page wraps a page handler: a redirect to the sign-in page without a
// session, 403 without the CSRF token on a form post.
func (a *App) page(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok, err := a.authenticate(r)
		if err != nil {
			a.serverError(w, r, err)
			return
		}
		if !ok || p.Session == nil {
			if unsafeMethod(r.Method) {
				http.Error(w, "Your session has ended. Sign in again.", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if !csrfOK(r, p) {
			http.Error(w, "This form has expired or came from another site. Go back, reload the page and try again.", http.StatusForbidden)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), keyUser, p)))
	}
}

func (a *App) serverError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	problem(w, ptInternal, "internal server error", nil)
}
