package idempotency

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed claim.lua
	claimLua    string
	claimScript = redis.NewScript(claimLua)
	//go:embed fenced.lua
	fencedLua    string
	fencedScript = redis.NewScript(fencedLua)
)

// DefaultPrefix is the key prefix of a [RedisStore] when RedisOptions.Prefix
// is empty.
const DefaultPrefix = "haita:idempotency:"

// RedisOptions configure a [RedisStore]. The zero value is valid.
type RedisOptions struct {
	// Prefix is put before every key. Zero: [DefaultPrefix].
	Prefix string
}

// RedisStore keeps claims and outcomes in Redis (7.0 or later), one hash per
// key, changed only by Lua scripts that read the server's clock (TIME), so
// every step is atomic and lease expiry is judged by one clock. Records
// expire by themselves: an outcome after its retention, an abandoned claim
// its retention after its lease ended; there is nothing to purge. It works
// with a single server, Sentinel or Cluster (each script touches one key).
// It is safe for concurrent use.
//
// A record removed by expiry starts again at token 1; the owner value
// (128 random bits) in every fenced write keeps a stale execution from
// completing the new record.
type RedisStore struct {
	rdb    redis.Scripter
	prefix string
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a store on rdb (a *redis.Client, *redis.ClusterClient
// or any redis.Scripter). It does no I/O.
func NewRedisStore(rdb redis.Scripter, opts RedisOptions) (*RedisStore, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil Redis client", ErrInvalidOptions)
	}
	p := opts.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	return &RedisStore{rdb: rdb, prefix: p}, nil
}

// Claim implements [Store].
func (s *RedisStore) Claim(ctx context.Context, req ClaimRequest) (Record, error) {
	v, err := claimScript.Run(ctx, s.rdb, []string{s.prefix + req.Key},
		req.Fingerprint, req.Owner, ms(req.Lease), ms(req.Retention)).Slice()
	if err != nil {
		return Record{}, fmt.Errorf("redis: %w", err)
	}
	bad := func() (Record, error) { return Record{}, fmt.Errorf("redis: unexpected claim reply %v", v) }
	if len(v) < 2 {
		return bad()
	}
	str := func(i int) string { s, _ := v[i].(string); return s }
	switch str(0) {
	case "claimed":
		tok, err := strconv.ParseUint(str(1), 10, 64)
		if err != nil {
			return bad()
		}
		return Record{State: Claimed, Token: tok}, nil
	case "inflight":
		if len(v) < 4 {
			return bad()
		}
		tok, _ := strconv.ParseUint(str(2), 10, 64)
		left, _ := v[3].(int64)
		return Record{State: InFlight, Fingerprint: str(1), Token: tok, RetryAfter: max(0, time.Duration(left)*time.Millisecond)}, nil
	case "done":
		if len(v) < 4 {
			return bad()
		}
		tok, _ := strconv.ParseUint(str(2), 10, 64)
		return Record{State: Done, Fingerprint: str(1), Token: tok, Value: []byte(str(3))}, nil
	}
	return bad()
}

// Extend implements [Store].
func (s *RedisStore) Extend(ctx context.Context, key, owner string, token uint64, lease time.Duration) error {
	return s.fenced(ctx, key, "extend", owner, token, ms(lease))
}

// Complete implements [Store].
func (s *RedisStore) Complete(ctx context.Context, key, owner string, token uint64, value []byte, retention time.Duration) error {
	return s.fenced(ctx, key, "complete", owner, token, value, ms(retention))
}

// Release implements [Store].
func (s *RedisStore) Release(ctx context.Context, key, owner string, token uint64) error {
	return s.fenced(ctx, key, "release", owner, token)
}

func (s *RedisStore) fenced(ctx context.Context, key, op, owner string, token uint64, args ...any) error {
	n, err := fencedScript.Run(ctx, s.rdb, []string{s.prefix + key},
		append([]any{op, owner, strconv.FormatUint(token, 10)}, args...)...).Int()
	if err != nil {
		return fmt.Errorf("idempotency: %s: redis: %w", op, err)
	}
	if n == 0 {
		return ErrLeaseLost
	}
	return nil
}

func ms(d time.Duration) int64 { return max(1, d.Milliseconds()) }
