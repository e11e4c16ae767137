package httpcc

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ETag returns the strong entity-tag for version, in the form sent in an ETag
// header: ETag(42) is `"v42"` (with the double quotes). Equal versions give
// equal tags; it suits a resource with one representation per version. A
// resource served in several representations (JSON and HTML, say) needs a
// tag per representation, which this function does not make.
func ETag(version int64) string {
	return `"v` + strconv.FormatInt(version, 10) + `"`
}

// ParseVersion returns the version encoded in etag, an entity-tag made by
// [ETag] such as `"v42"`. It returns an error wrapping [ErrMalformedETag] for
// anything else: a weak tag (W/"v42"), a tag not made by [ETag], or a value
// that is not one entity-tag.
func ParseVersion(etag string) (int64, error) {
	t, err := parseTag(etag)
	if err != nil {
		return 0, fmt.Errorf("%w: %q: %s", ErrMalformedETag, etag, err)
	}
	if t.weak {
		return 0, fmt.Errorf("%w: %q is weak", ErrMalformedETag, etag)
	}
	num, ok := strings.CutPrefix(t.opaque, "v")
	if !ok {
		return 0, fmt.Errorf("%w: %q is not a version tag", ErrMalformedETag, etag)
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || ETag(v) != etag { // the round trip rejects "+1", "01", "-0"
		return 0, fmt.Errorf("%w: %q is not a version tag", ErrMalformedETag, etag)
	}
	return v, nil
}

// entityTag is one parsed entity-tag (RFC 9110 §8.8.3).
type entityTag struct {
	opaque string // between the double quotes, quotes excluded
	weak   bool
}

func (t entityTag) String() string {
	if t.weak {
		return `W/"` + t.opaque + `"`
	}
	return `"` + t.opaque + `"`
}

// strongMatch is the strong comparison of RFC 9110 §8.8.3.2: both strong and
// the opaque-tags identical.
func strongMatch(a, b entityTag) bool { return !a.weak && !b.weak && a.opaque == b.opaque }

// weakMatch is the weak comparison: the opaque-tags identical, either weak.
func weakMatch(a, b entityTag) bool { return a.opaque == b.opaque }

// parseTag parses exactly one entity-tag, without surrounding whitespace.
func parseTag(s string) (entityTag, error) {
	t, n, err := scanTag(s, 0)
	if err != nil {
		return entityTag{}, err
	}
	if n != len(s) {
		return entityTag{}, fmt.Errorf("unexpected %q after entity-tag", s[n:])
	}
	return t, nil
}

// scanTag scans one entity-tag starting at s[i] and returns it with the
// offset just past its closing quote.
//
//	entity-tag = [ weak ] opaque-tag
//	weak       = %s"W/"
//	opaque-tag = DQUOTE *etagc DQUOTE
//	etagc      = %x21 / %x23-7E / obs-text
func scanTag(s string, i int) (entityTag, int, error) {
	var t entityTag
	if strings.HasPrefix(s[i:], "W/") {
		t.weak = true
		i += 2
	}
	if i >= len(s) {
		return t, i, errors.New("missing entity-tag")
	}
	if s[i] != '"' {
		return t, i, fmt.Errorf("entity-tag must be in double quotes, found %q at offset %d", s[i], i)
	}
	start := i + 1
	for j := start; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			t.opaque = s[start:j]
			return t, j + 1, nil
		case c == 0x21 || (c >= 0x23 && c <= 0x7e) || c >= 0x80:
		default:
			return t, j, fmt.Errorf("invalid character %q in entity-tag at offset %d", c, j)
		}
	}
	return t, len(s), errors.New("entity-tag has no closing double quote")
}

// parseTagList parses the value of If-Match or If-None-Match, whose field
// lines are joined with commas:
//
//	If-Match = "*" / #entity-tag
//
// Empty list elements are accepted (RFC 9110 §5.6.1.2); a list with no
// element at all, or "*" together with tags, is an error.
func parseTagList(lines []string) (tags []entityTag, star bool, err error) {
	s := strings.Join(lines, ",")
	n := 0 // elements, "*" included
	i := 0
	for {
		// Skip OWS and empty elements.
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == ',') {
			i++
		}
		if i == len(s) {
			break
		}
		if s[i] == '*' {
			star = true
			i++
		} else {
			var t entityTag
			t, i, err = scanTag(s, i)
			if err != nil {
				return nil, false, err
			}
			tags = append(tags, t)
		}
		n++
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i < len(s) && s[i] != ',' {
			return nil, false, fmt.Errorf("expected comma, found %q at offset %d", s[i], i)
		}
	}
	switch {
	case n == 0:
		return nil, false, errors.New(`empty value: want "*" or a list of entity-tags`)
	case star && n > 1:
		return nil, false, errors.New(`"*" must be the only value`)
	}
	return tags, star, nil
}
