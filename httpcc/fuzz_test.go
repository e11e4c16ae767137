package httpcc

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var tagListSeeds = []string{
	`"v1"`, `W/"v1"`, `*`, ` * `, `"a", W/"b" ,"c"`, `,,"x",,`, `"a,b"`, `""`, `W/""`,
	`"v1" "v2"`, `"unterminated`, `v1`, `w/"x"`, `*, "a"`, `"\u00e9"`, "\"\x80\xff\"", "\t\"a\"\t,\t",
	`W/`, `W`, `"a"W/"b"`, `"a",*`, "", " ", ",",
}

// FuzzParseETags checks that parsing If-Match / If-None-Match values never
// panics, and that what it accepts survives a round trip through String.
func FuzzParseETags(f *testing.F) {
	for _, s := range tagListSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tags, star, err := parseTagList([]string{s})
		if err != nil {
			if tags != nil || star {
				t.Fatalf("error %v with results %v %v", err, tags, star)
			}
			return
		}
		if star && len(tags) != 0 {
			t.Fatalf("star with tags %v", tags)
		}
		if !star && len(tags) == 0 {
			t.Fatalf("accepted %q with no element", s)
		}
		if star {
			return
		}
		parts := make([]string, len(tags))
		for i, tag := range tags {
			if strings.ContainsAny(tag.opaque, "\" \t") {
				t.Fatalf("opaque-tag %q holds a forbidden byte", tag.opaque)
			}
			parts[i] = tag.String()
			one, err := parseTag(parts[i])
			if err != nil || one != tag {
				t.Fatalf("parseTag(%s) = %v, %v; want %v", parts[i], one, err, tag)
			}
		}
		again, star2, err := parseTagList([]string{strings.Join(parts, ", ")})
		if err != nil || star2 || len(again) != len(tags) {
			t.Fatalf("re-parse of %q: %v %v %v", parts, again, star2, err)
		}
		for i := range tags {
			if again[i] != tags[i] {
				t.Fatalf("re-parse tag %d = %v, want %v", i, again[i], tags[i])
			}
		}
	})
}

// FuzzParseVersion checks that ParseVersion accepts exactly what ETag makes.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{`"v0"`, `"v42"`, `"v-1"`, `"v+1"`, `"v01"`, `W/"v1"`, `"v9223372036854775807"`, `"v9223372036854775808"`, `v1`, `""`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedETag) {
				t.Fatalf("ParseVersion(%q) error %v does not wrap ErrMalformedETag", s, err)
			}
			return
		}
		if ETag(v) != s {
			t.Fatalf("ParseVersion(%q) = %d, but ETag(%d) = %s", s, v, v, ETag(v))
		}
	})
}

// FuzzCheck feeds arbitrary conditional headers to Check and WriteError:
// neither panics, every error is one of the documented kinds, and 304 only
// comes back for GET and HEAD.
func FuzzCheck(f *testing.F) {
	date := "Sun, 01 Mar 2026 12:00:00 GMT"
	f.Add("PUT", `"v7"`, "", "", "", `"v7"`, true, int64(1772366400))
	f.Add("GET", "", `W/"v7"`, "", date, `"v7"`, true, int64(1772366400))
	f.Add("PUT", "", "*", "", "", "", false, int64(0))
	f.Add("DELETE", "", "", date, "", `W/"x"`, true, int64(1772366401))
	f.Add("HEAD", "*", "junk", "junk", "junk", `"a,b"`, true, int64(-1))
	f.Fuzz(func(t *testing.T, method, im, inm, ius, ims, etag string, exists bool, mod int64) {
		if !validMethod(method) {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "/x", nil)
		r.Method = method
		for k, v := range map[string]string{"If-Match": im, "If-None-Match": inm, "If-Unmodified-Since": ius, "If-Modified-Since": ims} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		var lm time.Time
		if mod != 0 {
			lm = time.Unix(mod%(1<<40), 0)
		}
		cur := State{ETag: etag, LastModified: lm, Exists: exists}
		err := Check(r, cur)
		var pe *PreconditionError
		var he *HeaderError
		switch {
		case err == nil:
		case errors.As(err, &pe):
			if pe.NotModified && method != http.MethodGet && method != http.MethodHead {
				t.Fatalf("304 for %s", method)
			}
		case errors.As(err, &he):
			if r.Header.Get(he.Header) == "" {
				t.Fatalf("HeaderError names %q, which the request lacks", he.Header)
			}
		case errors.Is(err, ErrMalformedETag):
		default:
			t.Fatalf("unexpected error %T %v", err, err)
		}
		WriteError(httptest.NewRecorder(), err)
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if c := m[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}
