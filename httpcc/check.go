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
// them for CONNECT, OPTIONS and TRACE. It returns
//
//   - nil when the method should be performed;
//   - a [*PreconditionError] matching [ErrPreconditionFailed] (412) when a
//     precondition is false, or [ErrNotModified] (304) when If-None-Match or
//     If-Modified-Since is false on a GET or HEAD;
//   - a [*HeaderError] matching [ErrMalformedHeader] (400) when If-Match,
//     If-None-Match or If-Unmodified-Since is malformed (a malformed
//     If-Modified-Since is ignored);
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
	} else if lines := h.Values("If-Unmodified-Since"); len(lines) > 0 {
		t, err := parseDate("If-Unmodified-Since", lines)
		if err != nil {
			return err
		}
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
	} else if lines := h.Values("If-Modified-Since"); getOrHead && len(lines) > 0 {
		t, err := parseDate("If-Modified-Since", lines)
		// §13.1.3: an invalid date, or no modification date, is ignored.
		if err == nil && cur.Exists && !cur.LastModified.IsZero() && !seconds(cur.LastModified).After(t) {
			return &PreconditionError{Current: cur, NotModified: true, Header: "If-Modified-Since"}
		}
	}
	return nil
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

// parseDate parses a field holding one HTTP-date (RFC 9110 §5.6.7).
func parseDate(header string, lines []string) (time.Time, error) {
	bad := func(reason string) error {
		return &HeaderError{Header: header, Value: strings.Join(lines, ", "), Reason: reason}
	}
	if len(lines) > 1 {
		return time.Time{}, bad("more than one field line: want one HTTP-date")
	}
	t, err := http.ParseTime(strings.Trim(lines[0], " \t"))
	if err != nil {
		return time.Time{}, bad(`not an HTTP-date such as "Sun, 06 Nov 1994 08:49:37 GMT"`)
	}
	return t, nil
}

// seconds truncates t to the one-second granularity of HTTP dates.
func seconds(t time.Time) time.Time { return t.Truncate(time.Second) }
