// Package redisholder reads who holds a Redis lock key that haita wrote: the
// key's owner value, its remaining time and its holder record ("owner token
// holder"), in one script, so that the three agree.
package redisholder

import (
	"context"
	_ "embed"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/redisslot"
	"github.com/haita/haita/lock"
)

var (
	//go:embed holder.lua
	holderLua    string
	holderScript = redis.NewScript(holderLua)
)

// NoExpiry is the TTL of a Record whose key has no expiry.
const NoExpiry = time.Duration(math.MaxInt64)

// Record is the holder of a key as one Redis server sees it. The zero
// Record is a free key.
type Record struct {
	// Owner is the lock key's value: the owner that holds it.
	Owner string
	// Token and Holder come from the holder record. They are zero when the
	// record is missing or names another owner (a key taken by a client
	// other than haita).
	Token  lock.Token
	Holder string
	// TTL is the key's remaining time when the script ran, or NoExpiry.
	TTL time.Duration
}

// Key returns the name of the holder record of the Redis key k: "owner
// token holder", written with the lease and living as long as it, in k's
// hash slot. The lock key itself keeps the owner value alone, as other
// clients expect.
func Key(k, prefix string) string {
	return redisslot.CounterKey(k, ":"+prefix+"haita:holder:"+k)
}

// Read reads the holder of the Redis key key, whose holder record is
// record, on c. A free key gives the zero Record. It returns c's error, or
// an error naming the reply or the record it could not parse.
func Read(ctx context.Context, c redis.Scripter, key, record string) (Record, error) {
	res, err := holderScript.Run(ctx, c, []string{key, record}).Slice()
	if err != nil {
		return Record{}, err
	}
	return parse(res)
}

// parse parses the holder script's reply: empty when the key is free, else
// {owner, pttl, record}.
func parse(res []any) (Record, error) {
	if len(res) == 0 {
		return Record{}, nil
	}
	if len(res) != 3 {
		return Record{}, fmt.Errorf("unexpected reply %v", res)
	}
	var r Record
	r.Owner, _ = res[0].(string)
	pttl, _ := res[1].(int64)
	r.TTL = time.Duration(pttl) * time.Millisecond
	if pttl < 0 {
		r.TTL = NoExpiry
	}
	rec, _ := res[2].(string)
	if parts := strings.SplitN(rec, " ", 3); len(parts) == 3 && parts[0] == r.Owner {
		tok, err := strconv.ParseUint(parts[1], 10, 64)
		if err != nil {
			return Record{}, fmt.Errorf("holder record: token %q: %v", parts[1], err)
		}
		r.Token, r.Holder = lock.Token(tok), parts[2]
	}
	return r, nil
}
