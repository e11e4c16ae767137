package httpcc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Sentinel errors. Each typed error below matches one of them with
// [errors.Is]; use [errors.As] to reach the facts it carries.
var (
	// ErrPreconditionFailed means a precondition evaluated to false: the
	// client's copy is stale (412). [Check] returns it as a
	// [*PreconditionError] carrying the current state.
	ErrPreconditionFailed = errors.New("httpcc: precondition failed")

	// ErrNotModified means If-None-Match or If-Modified-Since evaluated to
	// false on a GET or HEAD: the client's copy is current (304). [Check]
	// returns it as a [*PreconditionError] with NotModified set.
	ErrNotModified = errors.New("httpcc: not modified")

	// ErrPreconditionRequired means a request that must be conditional came
	// without a precondition (428, RFC 6585 §3). [Policy.Require] returns it
	// as a [*RequiredError].
	ErrPreconditionRequired = errors.New("httpcc: precondition required")

	// ErrLocked means a pessimistic lock (a checkout) held by someone else
	// blocks the write (423, RFC 4918 §11.3). Handlers return it as a
	// [*LockedError] naming the holder.
	ErrLocked = errors.New("httpcc: locked")

	// ErrMalformedHeader means a conditional header could not be parsed
	// (400). [Check] returns it as a [*HeaderError] naming the header.
	ErrMalformedHeader = errors.New("httpcc: malformed header")

	// ErrMalformedETag is returned (wrapped) by [ParseVersion] for a string
	// that is not a tag made by [ETag], and by [Check] when [State].ETag is
	// not a valid entity-tag: a server-side bug, which [WriteError] writes as
	// 500.
	ErrMalformedETag = errors.New("httpcc: malformed entity-tag")
)

// PreconditionError reports a false precondition, with the current state of
// the resource so the response can tell the client what it lost against. It
// matches [ErrPreconditionFailed], or [ErrNotModified] when NotModified is
// set. The zero value, with Current filled in, is a 412: handlers build one
// themselves when their versioned write finds the version changed after
// [Check] passed.
type PreconditionError struct {
	// Current is the state of the resource now. [WriteError] sends its ETag
	// and Last-Modified with the response.
	Current State

	// NotModified selects 304 Not Modified instead of 412.
	NotModified bool

	// Header names the precondition that failed, such as "If-Match"; it is
	// "" when a handler reports a versioned save that lost after [Check]
	// passed, which reads as a failed If-Match.
	Header string

	// ContentType and Representation, when Representation is non-nil, are
	// sent as the body of the 412 response instead of a problem document,
	// so the client can show the current version beside its own. Ignored for
	// 304, which has no body.
	ContentType    string
	Representation []byte

	// Type is the problem document's type URI; "" writes "about:blank".
	Type string
}

// Error returns a message naming the current entity-tag.
func (e *PreconditionError) Error() string {
	if e.NotModified {
		return ErrNotModified.Error()
	}
	msg := ErrPreconditionFailed.Error()
	if e.Header != "" {
		msg += " (" + e.Header + ")"
	}
	switch {
	case !e.Current.Exists:
		return msg + ": the resource does not exist"
	case e.Current.ETag != "":
		return msg + ": current entity-tag is " + e.Current.ETag
	}
	return msg
}

// Is reports whether target is [ErrPreconditionFailed] or, for a 304,
// [ErrNotModified].
func (e *PreconditionError) Is(target error) bool {
	if e.NotModified {
		return target == ErrNotModified
	}
	return target == ErrPreconditionFailed
}

// StatusCode returns 412, or 304 when NotModified is set.
func (e *PreconditionError) StatusCode() int {
	if e.NotModified {
		return http.StatusNotModified
	}
	return http.StatusPreconditionFailed
}

func (e *PreconditionError) writeResponse(w http.ResponseWriter) {
	SetValidators(w.Header(), e.Current)
	if e.NotModified {
		writeNotModified(w)
		return
	}
	if e.Representation != nil {
		if e.ContentType != "" {
			w.Header().Set("Content-Type", e.ContentType)
		}
		w.WriteHeader(http.StatusPreconditionFailed)
		_, _ = w.Write(e.Representation)
		return
	}
	ext := map[string]any{}
	detail := "the resource has changed since you read it"
	if e.Header == "If-None-Match" {
		detail = "the resource already exists"
	}
	if !e.Current.Exists {
		detail = "the resource does not exist"
	} else if e.Current.ETag != "" {
		ext["etag"] = e.Current.ETag
		detail += "; its current entity-tag is " + e.Current.ETag
	}
	writeProblem(w, e.Type, http.StatusPreconditionFailed, detail, ext)
}

// HeaderError reports a malformed conditional header. It matches
// [ErrMalformedHeader].
type HeaderError struct {
	Header string // the field name, such as "If-Match"
	Value  string // the received value, field lines joined with ", "
	Reason string // what is wrong with it
	Type   string // the problem document's type URI; "" writes "about:blank"
}

// Error returns a message naming the header and the fault.
func (e *HeaderError) Error() string {
	return fmt.Sprintf("httpcc: malformed %s header: %s", e.Header, e.Reason)
}

// Is reports whether target is [ErrMalformedHeader].
func (e *HeaderError) Is(target error) bool { return target == ErrMalformedHeader }

// StatusCode returns 400.
func (e *HeaderError) StatusCode() int { return http.StatusBadRequest }

func (e *HeaderError) writeResponse(w http.ResponseWriter) {
	writeProblem(w, e.Type, http.StatusBadRequest,
		fmt.Sprintf("malformed %s header: %s", e.Header, e.Reason),
		map[string]any{"header": e.Header})
}

// RequiredError reports a request that had to carry a precondition and did
// not. It matches [ErrPreconditionRequired].
type RequiredError struct {
	Method  string   // the request method
	Headers []string // the headers that would have satisfied the requirement
	// Ignored names the conditional headers the request carried that were
	// ignored as invalid, such as an If-Unmodified-Since that is not an
	// HTTP-date.
	Ignored []string
	// Type is the problem document's type URI; "" writes "about:blank".
	Type string
}

// Error returns a message naming the method and the headers it needs.
func (e *RequiredError) Error() string {
	return fmt.Sprintf("httpcc: %s requires a precondition: %s%s", e.Method, orList(e.Headers), e.ignored())
}

func (e *RequiredError) ignored() string {
	if len(e.Ignored) == 0 {
		return ""
	}
	return fmt.Sprintf(" (%s ignored: not a valid HTTP-date)", strings.Join(e.Ignored, ", "))
}

// Is reports whether target is [ErrPreconditionRequired].
func (e *RequiredError) Is(target error) bool { return target == ErrPreconditionRequired }

// StatusCode returns 428.
func (e *RequiredError) StatusCode() int { return http.StatusPreconditionRequired }

func (e *RequiredError) writeResponse(w http.ResponseWriter) {
	// RFC 6585 §3: the response should explain how to resubmit.
	ext := map[string]any{"required": e.Headers}
	if len(e.Ignored) > 0 {
		ext["ignored"] = e.Ignored
	}
	writeProblem(w, e.Type, http.StatusPreconditionRequired,
		fmt.Sprintf("%s requires a precondition: send %s (the ETag from your last read goes in If-Match)%s",
			e.Method, orList(e.Headers), e.ignored()), ext)
}

// LockedError reports a write blocked by a pessimistic lock, such as a
// checkout held by another user. It matches [ErrLocked]. Handlers build it
// from their lock's own error; [WriteError] writes 423 Locked with the holder
// and, when Until is set, a Retry-After field.
type LockedError struct {
	Holder string    // who holds the lock, as shown to users
	Since  time.Time // when it was taken; zero if unknown
	Until  time.Time // when it expires unless renewed; zero if unknown
	Type   string    // the problem document's type URI; "" writes "about:blank"
}

// Error returns a message naming the holder and the expiry.
func (e *LockedError) Error() string {
	var b strings.Builder
	b.WriteString(ErrLocked.Error())
	if e.Holder != "" {
		b.WriteString(" by " + e.Holder)
	}
	if !e.Until.IsZero() {
		b.WriteString(" until " + e.Until.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// Is reports whether target is [ErrLocked].
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// StatusCode returns 423.
func (e *LockedError) StatusCode() int { return http.StatusLocked }

func (e *LockedError) writeResponse(w http.ResponseWriter) {
	ext := map[string]any{}
	detail := "the resource is locked"
	if e.Holder != "" {
		ext["holder"] = e.Holder
		detail += " by " + e.Holder
	}
	if !e.Since.IsZero() {
		ext["since"] = e.Since.UTC().Format(time.RFC3339)
	}
	if !e.Until.IsZero() {
		ext["until"] = e.Until.UTC().Format(time.RFC3339)
		detail += " until " + e.Until.UTC().Format(time.RFC3339)
		w.Header().Set("Retry-After", e.Until.UTC().Format(http.TimeFormat))
	}
	writeProblem(w, e.Type, http.StatusLocked, detail, ext)
}

// writeNotModified writes a 304 (RFC 9110 §15.4.5). It keeps the fields a
// 200 would carry that the handler set already (Cache-Control,
// Content-Location, Date, ETag, Expires, Vary) and removes representation
// metadata that describes a body the 304 does not have; Last-Modified goes
// too when ETag is there, as net/http.ServeContent does.
func writeNotModified(w http.ResponseWriter) {
	h := w.Header()
	for _, k := range []string{"Content-Type", "Content-Length", "Content-Encoding", "Content-Language", "Content-Range"} {
		h.Del(k)
	}
	if h.Get("ETag") != "" {
		h.Del("Last-Modified")
	}
	w.WriteHeader(http.StatusNotModified)
}

// responder is implemented by the error types of this package.
type responder interface {
	error
	writeResponse(w http.ResponseWriter)
}

var (
	_ responder = (*PreconditionError)(nil)
	_ responder = (*HeaderError)(nil)
	_ responder = (*RequiredError)(nil)
	_ responder = (*LockedError)(nil)
)

// WriteError writes err as the response: a [*PreconditionError] as 412 (with
// the current ETag and Last-Modified, and the current representation if it
// carries one) or 304 (with the current ETag and the fields already set on w
// that RFC 9110 §15.4.5 makes a 304 repeat, such as Cache-Control and Vary;
// without Content-Type or other metadata of a body), a [*HeaderError] as 400, a [*RequiredError] as 428 and
// a [*LockedError] as 423, found with [errors.As] so wrapped errors work.
// Bodies are RFC 9457 problem documents (application/problem+json) whose
// type is the error's Type field, or "about:blank". Any other
// error is written as 500 without its message, which may hold internals; log
// it before calling WriteError. A nil err writes nothing. WriteError must be
// called before anything else is written to w.
func WriteError(w http.ResponseWriter, err error) {
	if err == nil {
		return
	}
	var r responder
	if errors.As(err, &r) {
		r.writeResponse(w)
		return
	}
	writeProblem(w, "", http.StatusInternalServerError, "internal server error", nil)
}

// writeProblem writes an RFC 9457 problem document of type typ ("" is
// "about:blank"), whose title is the status text.
func writeProblem(w http.ResponseWriter, typ string, status int, detail string, ext map[string]any) {
	p := make(map[string]any, len(ext)+4)
	for k, v := range ext {
		p[k] = v
	}
	if typ == "" {
		typ = "about:blank"
	}
	p["type"] = typ
	p["title"] = http.StatusText(status)
	p["status"] = status
	p["detail"] = detail
	body, err := json.Marshal(p)
	if err != nil { // only strings, ints and string slices go in
		panic("httpcc: encoding problem document: " + err.Error())
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func orList(s []string) string {
	switch len(s) {
	case 0:
		return "a conditional header"
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
