package idempotency_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/haita/haita/idempotency"
)

// FuzzParseKey checks ParseKey against the sf-string grammar: every accepted
// value re-serialises to the trimmed input, and every rejection is
// ErrMalformedKey.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{`"abc"`, `"a\"b"`, `abc`, `""`, `"a", "b"`, `"a";p=1`, ` "x" `, `"\`, "\"\x7f\""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, field string) {
		k, err := idempotency.ParseKey(field)
		if err != nil {
			if !errors.Is(err, idempotency.ErrMalformedKey) {
				t.Fatalf("ParseKey(%q) = %v; want ErrMalformedKey", field, err)
			}
			return
		}
		if k == "" || len(k) > idempotency.MaxKeyLen {
			t.Fatalf("ParseKey(%q) = %q: empty or too long", field, k)
		}
		for i := 0; i < len(k); i++ {
			if k[i] < 0x20 || k[i] > 0x7e {
				t.Fatalf("ParseKey(%q) = %q: byte %#x outside printable ASCII", field, k, k[i])
			}
		}
		enc := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(k) + `"`
		if enc != strings.Trim(field, " ") {
			t.Fatalf("ParseKey(%q) = %q, which serialises to %q", field, k, enc)
		}
	})
}
