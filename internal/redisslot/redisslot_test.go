package redisslot

import "testing"

func TestSlot(t *testing.T) {
	// Values from the Redis Cluster specification and redis-cli CLUSTER KEYSLOT.
	for _, tc := range []struct {
		key  string
		slot int
	}{
		{"123456789", 0x31C3 % Slots},
		{"foo", 12182},
		{"bar", 5061},
		{"{user1000}.following", Slot("user1000")},
		{"foo{}{bar}", Slot("foo{}{bar}")},
		{"foo{{bar}}zap", Slot("{bar")},
		{"foo{bar}{zap}", Slot("bar")},
	} {
		if got := Slot(tc.key); got != tc.slot {
			t.Errorf("Slot(%q) = %d, want %d", tc.key, got, tc.slot)
		}
	}
}

func TestTagCoversEverySlot(t *testing.T) {
	for s := range Slots {
		tag := Tag(s)
		if tag == "" || len(tag) > 4 {
			t.Fatalf("Tag(%d) = %q", s, tag)
		}
		if got := Slot("{" + tag + "}x"); got != s {
			t.Fatalf("Slot of tag %q = %d, want %d", tag, got, s)
		}
	}
	for _, k := range []string{"a", "orders:42", "{x}y", "ümlaut"} {
		if Slot(CounterKey(k, ":haita:fence")) != Slot(k) {
			t.Errorf("CounterKey(%q) is in another slot", k)
		}
	}
}
