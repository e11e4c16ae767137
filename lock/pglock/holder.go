package pglock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

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

var _ lock.HolderNotifier = (*backend)(nil)

// SubscribeHolder implements lock.HolderNotifier with a LISTEN on a
// connection of its own (the Locker's listener serves waiters, and a reader
// must not take a waiter's place): a release that frees the key, and one
// that hands it to a queued waiter (on a channel of its own, the table's
// name + "_held", which waiters do not listen on), wake the reader; a new
// holder of a free key and an expiry notify nothing. The LISTEN is in effect when it returns.
func (b *backend) SubscribeHolder(ctx context.Context, key string) (lock.Subscription, error) {
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &listenSub{c: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	ready := make(chan error, 1)
	listen := "LISTEN " + pgx.Identifier{b.n.channel}.Sanitize() + "; LISTEN " + pgx.Identifier{b.n.held}.Sanitize()
	go func() {
		defer close(s.done)
		defer close(s.c)
		err := b.c.listen(lctx, func(conn *pgx.Conn) error {
			if _, err := conn.Exec(lctx, listen); err != nil {
				return err
			}
			ready <- nil
			for {
				n, err := conn.WaitForNotification(lctx)
				if err != nil {
					return err
				}
				if n.Payload == key {
					select {
					case s.c <- struct{}{}:
					default:
					}
				}
			}
		})
		select {
		case ready <- err: // failed before the LISTEN took effect
		default:
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("pglock: listen for %q: %w", key, err)
		}
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	return s, nil
}

// listenSub is a Subscription on a LISTEN connection of its own.
type listenSub struct {
	c      chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func (s *listenSub) C() <-chan struct{} { return s.c }

// Close ends the LISTEN, closing its connection, and waits for it.
func (s *listenSub) Close() {
	s.once.Do(func() {
		s.cancel()
		<-s.done
	})
}
