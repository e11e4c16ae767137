package httpcc

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// State is what a handler knows about the current state of the target
// resource when it evaluates a request's preconditions. The zero State is a
// resource that does not exist.
type State struct {
	// ETag is the current representation's entity-tag as sent in an ETag
	// header, usually [ETag](version); "" means the resource has none. It is
	// ignored when Exists is false.
	ETag string

	// LastModified is the time of the last change; the zero time means none
	// is known. HTTP carries it with one-second granularity. A handler that
	// keeps the deletion time of a deleted resource may report it here with
	// Exists false, so that If-Unmodified-Since fails against the deletion.
	LastModified time.Time

	// Exists reports whether the resource currently has a representation.
	// "If-Match: *" holds only when it does, "If-None-Match: *" only when it
	// does not.
	Exists bool
}

// Check evaluates the conditional headers of r against cur in the order RFC
// 9110 §13.2.2 fixes: If-Match, or else If-Unmodified-Since; then
// If-None-Match, or else, for GET and HEAD, If-Modified-Since. It ignores
// them for CONNECT, OPTIONS and TRACE. As §13.1.3 and §13.1.4 require, a
// date field is ignored when its value is not one valid HTTP-date (a list
// of dates included) and when cur has no LastModified; dates compare at
// the one-second granularity of HTTP-dates. It returns
//
//   - nil when the method should be performed;
//   - a [*PreconditionError] matching [ErrPreconditionFailed] (412) when a
//     precondition is false, or [ErrNotModified] (304) when If-None-Match or
//     If-Modified-Since is false on a GET or HEAD;
//   - a [*HeaderError] matching [ErrMalformedHeader] (400) when If-Match or
//     If-None-Match is malformed;
//   - an error wrapping [ErrMalformedETag] when cur.ETag is not a valid
//     entity-tag, which is the handler's bug.
//
// Each error can be written with [WriteError]. Check reads only r's header;
// it does not block. A nil error does not make the write safe: the handler
// must still save with a write conditional on the version it read (see the
// package documentation).
func Check(r *http.Request, cur State) error {
	switch r.Method {
	case http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return nil // §13.2.1: no selected representation to test.
	}
	h := r.Header
	fail := func(header string) error { return &PreconditionError{Current: cur, Header: header} }
	getOrHead := r.Method == http.MethodGet || r.Method == http.MethodHead

	// Step 1 and 2: If-Match, else If-Unmodified-Since.
	if lines := h.Values("If-Match"); len(lines) > 0 {
		ok, err := ifMatch(lines, cur)
		if err != nil {
			return err
		}
		if !ok {
			return fail("If-Match")
		}
	} else if t, ok := ValidDate(h, "If-Unmodified-Since"); ok {
		// §13.1.4: ignored when the resource has no modification date.
		if !cur.LastModified.IsZero() && seconds(cur.LastModified).After(t) {
			return fail("If-Unmodified-Since")
		}
	}

	// Step 3 and 4: If-None-Match, else If-Modified-Since for GET and HEAD.
	if lines := h.Values("If-None-Match"); len(lines) > 0 {
		ok, err := ifNoneMatch(lines, cur)
		if err != nil {
			return err
		}
		if !ok {
			if getOrHead {
				return &PreconditionError{Current: cur, NotModified: true, Header: "If-None-Match"}
			}
			return fail("If-None-Match")
		}
	} else if t, ok := ValidDate(h, "If-Modified-Since"); getOrHead && ok {
		// §13.1.3: ignored without a modification date.
		if cur.Exists && !cur.LastModified.IsZero() && !seconds(cur.LastModified).After(t) {
			return &PreconditionError{Current: cur, NotModified: true, Header: "If-Modified-Since"}
		}
	}
	return nil
}

// CheckRead is [Check] for a handler serving a read (GET or HEAD): it sets
// the validators of cur on w with [SetValidators], evaluates r's
// preconditions against cur and, when one is false or malformed, writes the
// response with [WriteError] (304, 412 or 400) and returns false. It
// returns true when the handler should write the representation.
//
// A 304 repeats the header fields that the 200 would carry (RFC 9110
// §15.4.5): set Cache-Control, Content-Location, Expires and Vary on w
// before calling CheckRead, as for the 200; ETag comes from cur and Date
// from net/http.
func CheckRead(w http.ResponseWriter, r *http.Request, cur State) bool {
	SetValidators(w.Header(), cur)
	if err := Check(r, cur); err != nil {
		WriteError(w, err)
		return false
	}
	return true
}

// ValidDate returns the HTTP-date (RFC 9110 §5.6.7) in the field name of h,
// and whether the field holds exactly one valid date. A field that is
// absent, holds something else, or holds a list of dates gives false:
// §13.1.3 and §13.1.4 make a recipient ignore If-Modified-Since and
// If-Unmodified-Since then.
func ValidDate(h http.Header, name string) (time.Time, bool) {
	lines := h.Values(name)
	if len(lines) != 1 {
		return time.Time{}, false
	}
	t, err := http.ParseTime(strings.Trim(lines[0], " \t"))
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// SetValidators sets the ETag and Last-Modified fields of h from s, as a
// response to a read or a successful write should. It sets nothing for a
// resource that does not exist, and each field only when s has a value for it.
func SetValidators(h http.Header, s State) {
	if !s.Exists {
		return
	}
	if s.ETag != "" {
		h.Set("ETag", s.ETag)
	}
	if !s.LastModified.IsZero() {
		h.Set("Last-Modified", s.LastModified.UTC().Format(http.TimeFormat))
	}
}

// ifMatch evaluates If-Match (RFC 9110 §13.1.1).
func ifMatch(lines []string, cur State) (bool, error) {
	tags, star, err := parseTagList(lines)
	if err != nil {
		return false, &HeaderError{Header: "If-Match", Value: strings.Join(lines, ", "), Reason: err.Error()}
	}
	if !cur.Exists {
		return false, nil
	}
	if star {
		return true, nil
	}
	if cur.ETag == "" {
		return false, nil
	}
	current, err := currentTag(cur)
	if err != nil {
		return false, err
	}
	for _, t := range tags {
		if strongMatch(t, current) {
			return true, nil
		}
	}
	return false, nil
}

// ifNoneMatch evaluates If-None-Match (RFC 9110 §13.1.2).
func ifNoneMatch(lines []string, cur State) (bool, error) {
	tags, star, err := parseTagList(lines)
	if err != nil {
		return false, &HeaderError{Header: "If-None-Match", Value: strings.Join(lines, ", "), Reason: err.Error()}
	}
	if !cur.Exists {
		return true, nil
	}
	if star {
		return false, nil
	}
	if cur.ETag == "" {
		return true, nil
	}
	current, err := currentTag(cur)
	if err != nil {
		return false, err
	}
	for _, t := range tags {
		if weakMatch(t, current) {
			return false, nil
		}
	}
	return true, nil
}

func currentTag(cur State) (entityTag, error) {
	t, err := parseTag(cur.ETag)
	if err != nil {
		return entityTag{}, fmt.Errorf("%w: State.ETag %q: %s", ErrMalformedETag, cur.ETag, err)
	}
	return t, nil
}

// seconds truncates t to the one-second granularity of HTTP dates.
func seconds(t time.Time) time.Time { return t.Truncate(time.Second) }
