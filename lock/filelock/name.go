package filelock

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/haita/haita/lock"
)

// maxEscaped is the longest escaped key kept whole in a file name. With the
// "k-" prefix and ".lock" suffix a name stays at 207 bytes, below the
// 255-byte limit of every common file system.
const maxEscaped = 200

// hashPrefixLen is how much of the escaped key a hashed name keeps, for
// people reading the directory.
const hashPrefixLen = 64

// FileName returns the name of key's lock file inside the directory given to
// [New]. It is safe for concurrent use. It returns an error matching
// lock.ErrInvalidKey for a key that lock.ValidateKey rejects.
//
// The encoding, version 1:
//
//   - Each byte of the key in [a-z0-9._-] is kept; every other byte
//     (uppercase letters too, so that case-insensitive file systems cannot
//     merge two keys) becomes %XX with two lowercase hex digits.
//   - When the escaped key is at most 200 bytes the name is
//     "k-" + escaped + ".lock". Escaping is reversible, so distinct keys
//     get distinct names by construction.
//   - Otherwise the name is "h-" + the first bytes of the escaped key (at
//     most 64, cut at an escape boundary) + "-" + the 64 hex digits of the
//     SHA-256 of the whole key + ".lock". The prefix is only for reading;
//     distinctness rests on SHA-256. The "k-" and "h-" forms never meet.
//
// Names are ASCII, at most 207 bytes, contain no '/' or NUL and never start
// with '.', so a key can neither leave the directory nor name a hidden or
// special entry.
func FileName(key string) (string, error) {
	if err := lock.ValidateKey(key); err != nil {
		return "", err
	}
	esc := escape(key, len(key)*3)
	if len(esc) <= maxEscaped {
		return "k-" + esc + ".lock", nil
	}
	sum := sha256.Sum256([]byte(key))
	return "h-" + escape(key, hashPrefixLen) + "-" + hex.EncodeToString(sum[:]) + ".lock", nil
}

// escape escapes key as FileName describes, stopping before the output
// would exceed limit bytes.
func escape(key string, limit int) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	b.Grow(min(len(key)*3, limit))
	for i := 0; i < len(key); i++ {
		c := key[i]
		if plain(c) {
			if b.Len()+1 > limit {
				break
			}
			b.WriteByte(c)
			continue
		}
		if b.Len()+3 > limit {
			break
		}
		b.WriteByte('%')
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&0xf])
	}
	return b.String()
}

func plain(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}
