package mysqllock

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/haita/haita/lock"
)

var _ lock.HolderReader = (*backend)(nil)

// ReadHolder implements lock.HolderReader with one read of the key's row;
// the database clock alone decides whether the lease is live. MySQL and
// MariaDB cannot notify, so a reader of holder changes polls
// (lock.Locker.WatchHolder answers lock.ErrUnsupported).
func (b *backend) ReadHolder(ctx context.Context, key string) (lock.HolderInfo, error) {
	var holder string
	var remaining, token int64
	sent := time.Now()
	switch err := b.scan(ctx, stHolder, []any{key}, &holder, &remaining, &token); {
	case errors.Is(err, sql.ErrNoRows):
		return lock.HolderInfo{}, lock.ErrNoHolder
	case err != nil:
		return lock.HolderInfo{}, fmt.Errorf("mysqllock: holder: %w", err)
	}
	return lock.HolderInfo{
		Key:       key,
		Holder:    holder,
		Token:     lock.Token(token),
		ExpiresAt: sent.Add(time.Duration(remaining) * time.Microsecond),
	}, nil
}
