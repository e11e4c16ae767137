package pglock

import (
	"context"
	"fmt"
	"time"

	"github.com/haita/haita/lock"
)

var _ lock.HolderReader = (*backend)(nil)

// holderSQL reads a key's live lease row; %[1]s is the quoted table. The
// remaining time is computed by the database clock, which alone decides
// expiry. It always returns one row: token 0 when the key is free.
const holderSQL = `SELECT coalesce(max(token), 0), coalesce(max(holder), ''),
	coalesce(max((extract(epoch FROM expires_at - now()) * 1e6)::bigint), 0)
FROM %[1]s WHERE key = $1 AND expires_at > now()`

// ReadHolder implements lock.HolderReader with one read of the key's row.
func (b *backend) ReadHolder(ctx context.Context, key string) (lock.HolderInfo, error) {
	var token, remaining int64
	var holder string
	sent := time.Now()
	if err := b.c.queryRow(ctx, fmt.Sprintf(holderSQL, b.n.table), key).Scan(&token, &holder, &remaining); err != nil {
		return lock.HolderInfo{}, fmt.Errorf("pglock: holder: %w", err)
	}
	if token == 0 {
		return lock.HolderInfo{}, lock.ErrNoHolder
	}
	return lock.HolderInfo{
		Key:       key,
		Holder:    holder,
		Token:     lock.Token(token),
		ExpiresAt: sent.Add(time.Duration(remaining) * time.Microsecond),
	}, nil
}
