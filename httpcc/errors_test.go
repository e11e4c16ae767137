package httpcc_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/haita/haita/httpcc"
)

func TestWriteError(t *testing.T) {
	mod := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	since := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	until := time.Date(2026, 3, 1, 10, 30, 0, 0, time.UTC)
	cur := httpcc.State{ETag: httpcc.ETag(8), LastModified: mod, Exists: true}
	tests := []struct {
		name     string
		err      error
		sentinel error
		status   int
		header   map[string]string
		body     map[string]any // decoded problem document; nil: check raw instead
		raw      string
	}{
		{
			name: "412 with current validators", err: &httpcc.PreconditionError{Current: cur},
			sentinel: httpcc.ErrPreconditionFailed, status: 412,
			header: map[string]string{"ETag": `"v8"`, "Last-Modified": "Sun, 01 Mar 2026 12:00:00 GMT", "Content-Type": "application/problem+json"},
			body: map[string]any{"type": "about:blank", "title": "Precondition Failed", "status": 412.0, "etag": `"v8"`,
				"detail": `the resource has changed since you read it; its current entity-tag is "v8"`},
		},
		{
			name: "412 from If-None-Match says it exists", err: &httpcc.PreconditionError{Current: cur, Header: "If-None-Match"},
			sentinel: httpcc.ErrPreconditionFailed, status: 412,
			body: map[string]any{"type": "about:blank", "title": "Precondition Failed", "status": 412.0, "etag": `"v8"`,
				"detail": `the resource already exists; its current entity-tag is "v8"`},
		},
		{
			name: "412 wrapped, for an absent resource", err: fmt.Errorf("save: %w", &httpcc.PreconditionError{}),
			sentinel: httpcc.ErrPreconditionFailed, status: 412,
			header: map[string]string{"ETag": ""},
			body:   map[string]any{"type": "about:blank", "title": "Precondition Failed", "status": 412.0, "detail": "the resource does not exist"},
		},
		{
			name:     "412 with the current representation",
			err:      &httpcc.PreconditionError{Current: cur, ContentType: "application/json", Representation: []byte(`{"value":8}`)},
			sentinel: httpcc.ErrPreconditionFailed, status: 412,
			header: map[string]string{"ETag": `"v8"`, "Content-Type": "application/json"},
			raw:    `{"value":8}`,
		},
		{
			name: "304 with validators and no body", err: &httpcc.PreconditionError{Current: cur, NotModified: true},
			sentinel: httpcc.ErrNotModified, status: 304,
			header: map[string]string{"ETag": `"v8"`, "Content-Type": ""},
			raw:    "",
		},
		{
			name: "400 names the header", err: &httpcc.HeaderError{Header: "If-Match", Value: "v8", Reason: "entity-tag must be in double quotes"},
			sentinel: httpcc.ErrMalformedHeader, status: 400,
			body: map[string]any{"type": "about:blank", "title": "Bad Request", "status": 400.0, "header": "If-Match",
				"detail": "malformed If-Match header: entity-tag must be in double quotes"},
		},
		{
			name: "428 says how to resubmit", err: &httpcc.RequiredError{Method: "PUT", Headers: []string{"If-Match", "If-Unmodified-Since"}},
			sentinel: httpcc.ErrPreconditionRequired, status: 428,
			body: map[string]any{"type": "about:blank", "title": "Precondition Required", "status": 428.0,
				"required": []any{"If-Match", "If-Unmodified-Since"},
				"detail":   "PUT requires a precondition: send If-Match or If-Unmodified-Since (the ETag from your last read goes in If-Match)"},
		},
		{
			name: "423 names the holder", err: &httpcc.LockedError{Holder: "alice", Since: since, Until: until},
			sentinel: httpcc.ErrLocked, status: 423,
			header: map[string]string{"Retry-After": "Sun, 01 Mar 2026 10:30:00 GMT"},
			body: map[string]any{"type": "about:blank", "title": "Locked", "status": 423.0, "holder": "alice",
				"since": "2026-03-01T09:00:00Z", "until": "2026-03-01T10:30:00Z",
				"detail": "the resource is locked by alice until 2026-03-01T10:30:00Z"},
		},
		{
			name: "other errors are 500 without their message", err: errors.New("db password is hunter2"),
			status: 500,
			body:   map[string]any{"type": "about:blank", "title": "Internal Server Error", "status": 500.0, "detail": "internal server error"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.sentinel != nil && !errors.Is(tt.err, tt.sentinel) {
				t.Errorf("errors.Is(%v, %v) = false", tt.err, tt.sentinel)
			}
			w := httptest.NewRecorder()
			httpcc.WriteError(w, tt.err)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d", w.Code, tt.status)
			}
			for k, v := range tt.header {
				if got := w.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if tt.body == nil {
				if got := w.Body.String(); got != tt.raw {
					t.Errorf("body = %q, want %q", got, tt.raw)
				}
				return
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if !reflect.DeepEqual(got, tt.body) {
				t.Errorf("body = %v\nwant   %v", got, tt.body)
			}
		})
	}
}

func TestWriteErrorNil(t *testing.T) {
	w := httptest.NewRecorder()
	httpcc.WriteError(w, nil)
	if w.Body.Len() != 0 || len(w.Header()) != 0 {
		t.Fatalf("WriteError(nil) wrote %d %q", w.Code, w.Body)
	}
}

func TestErrorsMatchOnlyTheirSentinel(t *testing.T) {
	all := []error{httpcc.ErrPreconditionFailed, httpcc.ErrNotModified, httpcc.ErrPreconditionRequired,
		httpcc.ErrLocked, httpcc.ErrMalformedHeader, httpcc.ErrMalformedETag}
	typed := map[error]error{
		&httpcc.PreconditionError{}:                  httpcc.ErrPreconditionFailed,
		&httpcc.PreconditionError{NotModified: true}: httpcc.ErrNotModified,
		&httpcc.RequiredError{}:                      httpcc.ErrPreconditionRequired,
		&httpcc.LockedError{}:                        httpcc.ErrLocked,
		&httpcc.HeaderError{}:                        httpcc.ErrMalformedHeader,
	}
	for err, want := range typed {
		for _, s := range all {
			if got := errors.Is(err, s); got != (s == want) {
				t.Errorf("errors.Is(%T %v, %v) = %v", err, err, s, got)
			}
		}
		if err.Error() == "" || err.Error()[:8] != "httpcc: " {
			t.Errorf("%T message %q lacks the package prefix", err, err.Error())
		}
	}
	sc := map[error]int{
		&httpcc.PreconditionError{}: 412, &httpcc.PreconditionError{NotModified: true}: 304,
		&httpcc.RequiredError{}: 428, &httpcc.LockedError{}: 423, &httpcc.HeaderError{}: 400,
	}
	for err, want := range sc {
		if got := err.(interface{ StatusCode() int }).StatusCode(); got != want {
			t.Errorf("%v.StatusCode() = %d, want %d", err, got, want)
		}
	}
}

func TestETagRoundTrip(t *testing.T) {
	for _, v := range []int64{0, 1, 42, -1, 1<<63 - 1, -1 << 63} {
		tag := httpcc.ETag(v)
		got, err := httpcc.ParseVersion(tag)
		if err != nil || got != v {
			t.Errorf("ParseVersion(ETag(%d) = %s) = %d, %v", v, tag, got, err)
		}
	}
	if got := httpcc.ETag(42); got != `"v42"` {
		t.Errorf("ETag(42) = %s", got)
	}
	for _, bad := range []string{``, `v42`, `"42"`, `W/"v42"`, `"v42" `, `"v+42"`, `"v042"`, `"v-0"`, `"v"`,
		`"v99999999999999999999"`, `"v42", "v43"`, `"V42"`} {
		if v, err := httpcc.ParseVersion(bad); !errors.Is(err, httpcc.ErrMalformedETag) {
			t.Errorf("ParseVersion(%s) = %d, %v; want ErrMalformedETag", bad, v, err)
		}
	}
}

func TestSetValidators(t *testing.T) {
	loc := time.FixedZone("JST", 9*3600)
	h := http.Header{}
	httpcc.SetValidators(h, httpcc.State{ETag: `"v3"`, LastModified: time.Date(2026, 3, 1, 21, 0, 0, 5, loc), Exists: true})
	if h.Get("ETag") != `"v3"` || h.Get("Last-Modified") != "Sun, 01 Mar 2026 12:00:00 GMT" {
		t.Errorf("headers = %v", h)
	}
	h = http.Header{}
	httpcc.SetValidators(h, httpcc.State{ETag: `"v3"`})
	if len(h) != 0 {
		t.Errorf("absent resource got headers %v", h)
	}
}
