package redisholder

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redisslot"
	"github.com/haita/haita/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }

func TestRead(t *testing.T) {
	s := testserver.Redis(t, testserver.RedisOptions{})
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	for _, tc := range []struct {
		name    string
		owner   string // "" leaves the key free
		ttl     time.Duration
		record  string // "" writes none
		want    Record
		wantErr bool
	}{
		{name: "free", want: Record{}},
		{name: "haita holder", owner: "o1", ttl: time.Minute, record: "o1 42 worker-7",
			want: Record{Owner: "o1", Token: 42, Holder: "worker-7"}},
		{name: "holder name with spaces", owner: "o1", ttl: time.Minute, record: "o1 7 a b c",
			want: Record{Owner: "o1", Token: 7, Holder: "a b c"}},
		{name: "no record", owner: "other", ttl: time.Minute, want: Record{Owner: "other"}},
		{name: "record of another owner", owner: "o2", ttl: time.Minute, record: "o1 42 worker-7",
			want: Record{Owner: "o2"}},
		{name: "no expiry", owner: "o1", record: "o1 3 w", want: Record{Owner: "o1", Token: 3, Holder: "w", TTL: NoExpiry}},
		{name: "bad token", owner: "o1", ttl: time.Minute, record: "o1 x w", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "redisholder:" + t.Name()
			rec := Key(key, "")
			if tc.owner != "" {
				if err := c.Set(t.Context(), key, tc.owner, tc.ttl).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if tc.record != "" {
				if err := c.Set(t.Context(), rec, tc.record, tc.ttl).Err(); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Read(t.Context(), c, key, rec)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Read = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.ttl > 0 && (got.TTL <= 0 || got.TTL > tc.ttl) {
				t.Errorf("TTL = %v, want in (0, %v]", got.TTL, tc.ttl)
			}
			if tc.ttl > 0 {
				got.TTL = 0
			}
			if got != tc.want {
				t.Errorf("Read = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestKeySameSlot(t *testing.T) {
	// The record must be in the lock key's slot, so that one script on a
	// Redis Cluster may read both.
	for _, k := range []string{"k", "{tag}k", "invoice:42"} {
		if got := Key(k, "p:"); redisslot.Slot(got) != redisslot.Slot(k) {
			t.Errorf("Key(%q) = %q in another slot", k, got)
		}
	}
}
