// Package redisslot computes Redis Cluster hash slots and names a counter key
// for every slot, so that a script can touch a lock key and its fencing
// counter in one call even when the lock key carries no hash tag.
package redisslot

import (
	"strconv"
	"strings"
	"sync"
)

// Slots is the number of Redis Cluster hash slots.
const Slots = 16384

// Slot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of the
// key, or of its hash tag — the part between the first '{' and the next '}'
// when that part is not empty — modulo 16384.
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % Slots)
}

// Tag returns a short string whose hash slot is slot: a key that begins with
// "{" + Tag(Slot(k)) + "}" lands in the same slot as k. The table behind it
// is built once, on first use, in a few milliseconds.
func Tag(slot int) string {
	tagsOnce.Do(buildTags)
	return tags[slot]
}

// CounterKey returns the name of the fencing counter that serves key: one
// counter per hash slot, named so that it shares key's slot. suffix follows
// the hash tag (for example a prefix and "haita:fence").
func CounterKey(key, suffix string) string {
	return "{" + Tag(Slot(key)) + "}" + suffix
}

var (
	tagsOnce sync.Once
	tags     []string // read-only once built
)

// buildTags finds, for every slot, the first base-36 string (in order of
// length, then value) that hashes to it. Strings of up to four characters
// cover all 16384 slots.
func buildTags() {
	t := make([]string, Slots)
	left := Slots
	for n := uint64(0); left > 0; n++ {
		s := strconv.FormatUint(n, 36)
		if slot := crc16(s) % Slots; t[slot] == "" {
			t[slot] = s
			left--
		}
	}
	tags = t
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func crc16(s string) uint16 {
	var c uint16
	for i := 0; i < len(s); i++ {
		c = c<<8 ^ crcTable[byte(c>>8)^s[i]]
	}
	return c
}
