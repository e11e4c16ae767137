package redlock

import (
	"context"
	_ "embed"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
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

var _ lock.HolderReader = (*backend)(nil)

// holderKey is the holder record of the Redis key k on one instance:
// "owner token holder" with that instance's token, written with the lease
// and living as long as it, in k's hash slot.
func holderKey(k, prefix string) string {
	return redisslot.CounterKey(k, ":"+prefix+"haita:holder:"+k)
}

// instanceHolder is one instance's view of a key.
type instanceHolder struct {
	owner  string
	token  lock.Token
	holder string
	pttl   time.Duration // noExpiry: none
}

const noExpiry = time.Duration(math.MaxInt64)

// ReadHolder implements lock.HolderReader. It reads every instance at once;
// the holder is the owner that holds the key on a majority. Its token is
// the greatest of those instances' own tokens, which is the token its grant
// handed out when every instance that granted it answers (with some down,
// it may be reported smaller); its expiry is when fewer than a majority
// would still hold it. When no owner has a majority and the instances that
// did not answer could make one, the outcome is unknown and an error says
// so.
func (b *backend) ReadHolder(ctx context.Context, key string) (lock.HolderInfo, error) {
	keys := b.keys(key)
	keys = []string{keys[0], keys[4]}
	sent := time.Now()
	views := make([]instanceHolder, len(b.clients))
	errs := make([]error, len(b.clients))
	var wg sync.WaitGroup
	for i, c := range b.clients {
		wg.Go(func() {
			res, err := holderScript.Run(ctx, c, keys).Slice()
			if err == nil {
				views[i], err = parseInstance(res)
			}
			if err != nil {
				errs[i] = fmt.Errorf("instance %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	return b.tally(key, sent, views, errs)
}

// tally decides the holder from the instances' views.
func (b *backend) tally(key string, sent time.Time, views []instanceHolder, errs []error) (lock.HolderInfo, error) {
	count := make(map[string]int)
	failed := 0
	best, bestN := "", 0
	for i, v := range views {
		switch {
		case errs[i] != nil:
			failed++
		case v.owner != "":
			count[v.owner]++
			if count[v.owner] > bestN {
				best, bestN = v.owner, count[v.owner]
			}
		}
	}
	if bestN < b.quorum {
		if bestN+failed >= b.quorum {
			return lock.HolderInfo{}, &QuorumError{Op: "holder", Key: key,
				Reason: fmt.Sprintf("%d instances did not answer, enough to hide a holder", failed), Errs: nonNil(errs)}
		}
		return lock.HolderInfo{}, lock.ErrNoHolder
	}
	info := lock.HolderInfo{Key: key}
	var pttls []time.Duration
	for i, v := range views {
		if errs[i] != nil || v.owner != best {
			continue
		}
		if v.token > info.Token {
			info.Token, info.Holder = v.token, v.holder
		}
		pttls = append(pttls, v.pttl)
	}
	// The lease holds while a majority has it: until the quorum-th longest
	// remaining time ends.
	slices.Sort(pttls)
	slices.Reverse(pttls)
	if d := pttls[b.quorum-1]; d != noExpiry {
		info.ExpiresAt = sent.Add(d)
	}
	return info, nil
}

func nonNil(errs []error) []error {
	var out []error
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// parseInstance parses the holder script's reply: empty when the key is
// free, else {owner, pttl, record}.
func parseInstance(res []any) (instanceHolder, error) {
	if len(res) == 0 {
		return instanceHolder{}, nil
	}
	if len(res) != 3 {
		return instanceHolder{}, fmt.Errorf("unexpected reply %v", res)
	}
	var v instanceHolder
	v.owner, _ = res[0].(string)
	pttl, _ := res[1].(int64)
	v.pttl = time.Duration(pttl) * time.Millisecond
	if pttl < 0 {
		v.pttl = noExpiry
	}
	rec, _ := res[2].(string)
	if parts := strings.SplitN(rec, " ", 3); len(parts) == 3 && parts[0] == v.owner {
		tok, err := strconv.ParseUint(parts[1], 10, 64)
		if err != nil {
			return instanceHolder{}, fmt.Errorf("holder record: token %q: %v", parts[1], err)
		}
		v.token, v.holder = lock.Token(tok), parts[2]
	}
	return v, nil
}
