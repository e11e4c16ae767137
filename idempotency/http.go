package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Header names used by [Middleware].
const (
	// HeaderKey is the request field that carries the idempotency key.
	HeaderKey = "Idempotency-Key"
	// HeaderReplayed is set to "true" on a response replayed from the
	// stored outcome of an earlier request (the name Stripe's API uses).
	HeaderReplayed = "Idempotent-Replayed"
)

// ErrMalformedKey is returned by [ParseKey] for a field that is not one
// Structured Field String (RFC 9651 §3.3.3) of 1 to [MaxKeyLen] characters.
var ErrMalformedKey = errors.New("idempotency: malformed Idempotency-Key field")

// HTTPOptions configure [Middleware]. The zero value is valid.
type HTTPOptions struct {
	// Required makes the key mandatory: a request to one of Methods
	// without it gets 400. Zero: a request without a key passes through
	// to the handler unprotected.
	Required bool
	// Methods are the request methods the middleware applies to; others
	// pass through. Zero: POST and PATCH.
	Methods []string
	// MaxBodyBytes bounds the request body the middleware reads to
	// fingerprint it; a longer body gets 413 and the handler does not run.
	// Zero: 1 MiB. Negative: invalid.
	MaxBodyBytes int64
	// Scope returns the namespace of a request's key, such as the
	// authenticated user's id, so that two clients choosing the same key
	// never see each other's responses. Zero: one namespace for all.
	Scope func(r *http.Request) string
	// DocURL is the address of the documentation of the idempotency
	// policy; when set, it is the "type" of the problem documents and a
	// Link rel="describedby" on error responses. Zero: "about:blank".
	DocURL string
	// Wait makes a request that finds the first request with its key still
	// being processed wait for that request's response (replayed, as by
	// [Runner.DoWait]) instead of getting 409, until its own context ends.
	// It is meant for HTML form posts, where a double click should land on
	// the page of the one result; the draft asks for 409, which API clients
	// should get. Zero: 409.
	Wait bool
	// Logger receives store errors. Zero: slog.Default().
	Logger *slog.Logger
}

// Middleware returns net/http middleware that makes the requests of
// opts.Methods that carry an Idempotency-Key field idempotent, following the
// IETF HTTPAPI draft "The Idempotency-Key HTTP Header Field"
// (docs/idempotency.md lists its requirements and how each is met):
//
//   - The field must be one sf-string of 1 to 255 characters; otherwise, or
//     when it is missing and opts.Required is set, the answer is 400.
//   - The request is fingerprinted: SHA-256 over the method, the path with
//     its query, and the body (each length-prefixed). The body is read
//     first, up to opts.MaxBodyBytes (413 beyond it), and handed on to the
//     handler unchanged.
//   - The first request with a key runs the handler through r.Do; its
//     response (status, header fields and body) is recorded and, unless the
//     status is 5xx, stored as the key's outcome before it is sent. A 5xx
//     response is sent but not stored: the key is released and a retry
//     runs the handler again.
//   - A later request with the key and the same fingerprint gets the stored
//     response, byte for byte, with Idempotent-Replayed: true.
//   - A request while the first is still being processed gets 409 with
//     Retry-After; one with a different fingerprint gets 422.
//   - If the claim was lost before the response was stored (the handler ran
//     past the lease without being able to extend it) or the store fails,
//     the answer is 500 and the handler's response is not sent.
//
// Error bodies are RFC 9457 problem documents (application/problem+json),
// as package httpcc writes them. The handler's request context ends, with
// cause [ErrLeaseLost], when the claim is about to expire. Handlers must not
// use http.Flusher or hijack the connection: the response is buffered.
// Middleware returns an error matching [ErrInvalidOptions] for a nil Runner
// or invalid options.
func Middleware(r *Runner, opts HTTPOptions) (func(http.Handler) http.Handler, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: nil Runner", ErrInvalidOptions)
	}
	if opts.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("%w: negative MaxBodyBytes %d", ErrInvalidOptions, opts.MaxBodyBytes)
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if len(opts.Methods) == 0 {
		opts.Methods = []string{http.MethodPost, http.MethodPatch}
	}
	opts.Methods = slices.Clone(opts.Methods)
	if opts.DocURL == "" {
		opts.DocURL = "about:blank"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return func(next http.Handler) http.Handler {
		return &middleware{r: r, o: opts, next: next}
	}, nil
}

type middleware struct {
	r    *Runner
	o    HTTPOptions
	next http.Handler
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !slices.Contains(m.o.Methods, req.Method) {
		m.next.ServeHTTP(w, req)
		return
	}
	fields := req.Header.Values(HeaderKey)
	if len(fields) == 0 {
		if m.o.Required {
			m.problem(w, http.StatusBadRequest, "Idempotency-Key is missing",
				"this operation requires an Idempotency-Key request header field: a unique string per operation, such as a random UUID, sent as a quoted string")
			return
		}
		m.next.ServeHTTP(w, req)
		return
	}
	if len(fields) > 1 {
		m.problem(w, http.StatusBadRequest, "Idempotency-Key is malformed",
			"send exactly one Idempotency-Key field")
		return
	}
	key, err := ParseKey(fields[0])
	if err != nil {
		m.problem(w, http.StatusBadRequest, "Idempotency-Key is malformed", err.Error())
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, m.o.MaxBodyBytes+1))
	if err != nil {
		m.problem(w, http.StatusBadRequest, "Bad Request", "reading the request body failed")
		return
	}
	if int64(len(body)) > m.o.MaxBodyBytes {
		m.problem(w, http.StatusRequestEntityTooLarge, "Request body too large",
			fmt.Sprintf("the request body is over %d bytes", m.o.MaxBodyBytes))
		return
	}
	scope := ""
	if m.o.Scope != nil {
		scope = m.o.Scope(req)
	}
	storeKey := strconv.Itoa(len(scope)) + ":" + scope + key
	if validKey("key", storeKey, false) != nil {
		m.problem(w, http.StatusBadRequest, "Idempotency-Key is malformed",
			fmt.Sprintf("the key is too long: at most %d bytes", MaxKeyLen-len(scope)-len(strconv.Itoa(len(scope)))-1))
		return
	}

	var sent *recorded // a 5xx response: sent, not stored
	do := m.r.Do
	if m.o.Wait {
		do = m.r.DoWait
	}
	res, err := do(req.Context(), storeKey, Fingerprint(req.Method, req.URL.RequestURI(), body),
		func(ctx context.Context, c Claim) ([]byte, error) {
			rec := &recorder{header: http.Header{}}
			r2 := req.WithContext(ctx)
			r2.Body = io.NopCloser(bytes.NewReader(body))
			r2.ContentLength = int64(len(body))
			m.next.ServeHTTP(rec, r2)
			out := rec.result()
			if out.Status >= 500 {
				sent = &out
				return nil, errServerError
			}
			return json.Marshal(out)
		})
	var (
		inflight *InFlightError
		mismatch *MismatchError
	)
	switch {
	case err == nil:
		var out recorded
		if jerr := json.Unmarshal(res.Value, &out); jerr != nil {
			m.o.Logger.Error("idempotency: stored response unreadable", "key", key, "err", jerr)
			m.problem(w, http.StatusInternalServerError, "Internal Server Error", "the stored response for this key is unreadable")
			return
		}
		out.write(w, res.Replayed)
	case errors.Is(err, errServerError) && sent != nil:
		sent.write(w, false)
	case errors.As(err, &inflight):
		secs := int64((inflight.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(max(1, secs), 10))
		m.problem(w, http.StatusConflict, "A request is outstanding for this Idempotency-Key",
			"a request with the same Idempotency-Key is being processed; retry later")
	case errors.As(err, &mismatch):
		m.problem(w, http.StatusUnprocessableEntity, "Idempotency-Key is already used",
			"this Idempotency-Key was used with a different request (method, path or body); use a new key for a new request")
	default:
		m.o.Logger.Error("idempotency: request not completed", "key", key, "err", err)
		m.problem(w, http.StatusInternalServerError, "Internal Server Error",
			"the request's outcome could not be recorded; retry it with the same Idempotency-Key")
	}
}

var errServerError = errors.New("idempotency: handler answered 5xx")

// problem writes an RFC 9457 problem document.
func (m *middleware) problem(w http.ResponseWriter, status int, title, detail string) {
	p := map[string]any{"type": m.o.DocURL, "title": title, "status": status, "detail": detail}
	body, _ := json.Marshal(p)
	h := w.Header()
	if m.o.DocURL != "about:blank" {
		h.Set("Link", "<"+m.o.DocURL+`>; rel="describedby"; type="text/html"`)
	}
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// Fingerprint returns the fingerprint [Middleware] computes for a request:
// the hex SHA-256 of the method, the request URI (path and query) and the
// body, each preceded by its length, so that no two different requests
// share an input.
func Fingerprint(method, requestURI string, body []byte) string {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(method), []byte(requestURI), body} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ParseKey parses an Idempotency-Key field value: one Structured Field
// String (RFC 9651 §3.3.3), a double-quoted string of printable ASCII in
// which only \" and \\ are escaped, with optional surrounding spaces and no
// parameters. The key is the unescaped string, 1 to [MaxKeyLen] bytes. Any
// other value returns an error matching [ErrMalformedKey].
func ParseKey(field string) (string, error) {
	s := strings.Trim(field, " ")
	if len(s) < 2 || s[0] != '"' {
		return "", fmt.Errorf("%w: not a quoted string", ErrMalformedKey)
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			i++
			if i == len(s) || (s[i] != '"' && s[i] != '\\') {
				return "", fmt.Errorf("%w: invalid escape", ErrMalformedKey)
			}
			b.WriteByte(s[i])
		case c == '"':
			if i != len(s)-1 {
				return "", fmt.Errorf("%w: characters after the closing quote", ErrMalformedKey)
			}
			if b.Len() == 0 {
				return "", fmt.Errorf("%w: empty key", ErrMalformedKey)
			}
			if b.Len() > MaxKeyLen {
				return "", fmt.Errorf("%w: key longer than %d characters", ErrMalformedKey, MaxKeyLen)
			}
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return "", fmt.Errorf("%w: character %#x not allowed in a string", ErrMalformedKey, c)
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("%w: no closing quote", ErrMalformedKey)
}

// recorded is a response as stored: status, header fields and body.
type recorded struct {
	Status int         `json:"status"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
}

func (r *recorded) write(w http.ResponseWriter, replayed bool) {
	h := w.Header()
	for k, v := range r.Header {
		h[k] = slices.Clone(v)
	}
	if replayed {
		h.Set(HeaderReplayed, "true")
	}
	w.WriteHeader(r.Status)
	_, _ = w.Write(r.Body)
}

// recorder buffers a handler's response.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 && status >= 200 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}

func (r *recorder) result() recorded {
	st := r.status
	if st == 0 {
		st = http.StatusOK
	}
	h := r.header.Clone()
	if h.Get("Content-Type") == "" && r.body.Len() > 0 {
		h.Set("Content-Type", http.DetectContentType(r.body.Bytes()))
	}
	h.Del("Date")
	return recorded{Status: st, Header: h, Body: r.body.Bytes()}
}
