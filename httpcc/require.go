package httpcc

import (
	"net/http"
	"slices"
	"strings"
)

// Policy says which requests must carry a precondition; [Policy.Require]
// answers 428 Precondition Required to those that do not. The zero Policy
// requires one for PUT, PATCH and DELETE. A Policy is a plain value, safe
// for concurrent use as long as its slices are not modified.
//
// A Policy checks only that a precondition is present; [Check] evaluates it,
// and rejects a malformed one with 400.
type Policy struct {
	// Methods lists the methods that must carry If-Match, a valid
	// If-Unmodified-Since, or "If-None-Match: *" (create-if-absent); an
	// If-Unmodified-Since that is not one HTTP-date does not count, since
	// [Check] ignores it (RFC 9110 §13.1.4). Methods
	// are case-sensitive, as in HTTP. Nil means PUT, PATCH and DELETE; an
	// empty non-nil slice means none.
	Methods []string

	// CreateMethods lists the methods that must carry If-None-Match, for
	// handlers that create the target resource itself, such as POST
	// /docs/{id} with "If-None-Match: *". Not for POST to a collection: the
	// collection exists, so "If-None-Match: *" would always fail there.
	// Zero value: none.
	CreateMethods []string
}

// defaultMethods are the state-changing methods that replace, modify or
// remove the target resource's current state.
var defaultMethods = []string{http.MethodPut, http.MethodPatch, http.MethodDelete}

// Require returns a [*RequiredError] (428) if r's method is one p lists and
// r carries none of the preconditions that satisfy it, and nil otherwise.
// Handlers can call it directly instead of installing [Policy.Handler].
func (p Policy) Require(r *http.Request) error {
	methods := p.Methods
	if methods == nil {
		methods = defaultMethods
	}
	update := slices.Contains(methods, r.Method)
	create := slices.Contains(p.CreateMethods, r.Method)
	if !update && !create {
		return nil
	}
	h := r.Header
	inm := h.Values("If-None-Match")
	if create && len(inm) > 0 {
		return nil
	}
	_, validIUS := ValidDate(h, "If-Unmodified-Since")
	if update && (len(h.Values("If-Match")) > 0 || validIUS ||
		(len(inm) == 1 && strings.Trim(inm[0], " \t") == "*")) {
		return nil
	}
	var want []string
	if update {
		want = append(want, "If-Match", "If-Unmodified-Since", `If-None-Match: *`)
	} else {
		want = append(want, "If-None-Match")
	}
	e := &RequiredError{Method: r.Method, Headers: want}
	if len(h.Values("If-Unmodified-Since")) > 0 && !validIUS {
		e.Ignored = []string{"If-Unmodified-Since"}
	}
	return e
}

// Handler returns a handler that answers 428 Precondition Required, through
// [WriteError], to the requests [Policy.Require] rejects and passes the others
// to next. It works with any [http.Handler], including Go 1.22+
// [http.ServeMux] patterns: wrap the handler of one route, or the whole mux.
func (p Policy) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := p.Require(r); err != nil {
			WriteError(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// RequirePrecondition returns a handler that answers 428 Precondition
// Required to PUT, PATCH and DELETE requests carrying none of If-Match, a
// valid If-Unmodified-Since or "If-None-Match: *", and passes everything else to
// next. It is Policy{}.Handler(next); use a [Policy] to change the methods or
// to require If-None-Match on a creating POST.
func RequirePrecondition(next http.Handler) http.Handler {
	return Policy{}.Handler(next)
}
