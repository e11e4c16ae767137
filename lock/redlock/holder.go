package redlock

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/haita/haita/internal/redisholder"
	"github.com/haita/haita/lock"
)

var _ lock.HolderReader = (*backend)(nil)

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
	views := make([]redisholder.Record, len(b.clients))
	errs := make([]error, len(b.clients))
	var wg sync.WaitGroup
	for i, c := range b.clients {
		wg.Go(func() {
			var err error
			if views[i], err = redisholder.Read(ctx, c, keys[0], keys[1]); err != nil {
				errs[i] = fmt.Errorf("instance %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	return b.tally(key, sent, views, errs)
}

// tally decides the holder from the instances' views.
func (b *backend) tally(key string, sent time.Time, views []redisholder.Record, errs []error) (lock.HolderInfo, error) {
	count := make(map[string]int)
	failed := 0
	best, bestN := "", 0
	for i, v := range views {
		switch {
		case errs[i] != nil:
			failed++
		case v.Owner != "":
			count[v.Owner]++
			if count[v.Owner] > bestN {
				best, bestN = v.Owner, count[v.Owner]
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
		if errs[i] != nil || v.Owner != best {
			continue
		}
		if v.Token > info.Token {
			info.Token, info.Holder = v.Token, v.Holder
		}
		pttls = append(pttls, v.TTL)
	}
	// The lease holds while a majority has it: until the quorum-th longest
	// remaining time ends.
	slices.Sort(pttls)
	slices.Reverse(pttls)
	if d := pttls[b.quorum-1]; d != redisholder.NoExpiry {
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
