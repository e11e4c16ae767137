package faults

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
)

// Fault 6: a waiter whose own lease expires while it waits must never
// report the key acquired. Only etcd keeps server-side state for a waiter
// (its queue key, bound to its own etcd lease); the other backends' waiters
// hold nothing on the engine while they wait.
func TestWaiterLeaseRevokedEtcd(t *testing.T) {
	r, _, cli := etcdRig(t, 1)
	violations := 0
	for i := range pick(3, 10) {
		key := uniqueKey(t, "waiter")
		ctx := t.Context()
		holder, err := r.locker(t, lock.Options{TTL: r.ttl, AutoRefresh: true}).Acquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		waiterL := r.locker(t, lock.Options{TTL: r.ttl})
		type result struct {
			le  *lock.Lease
			err error
		}
		res := make(chan result, 1)
		go func() {
			le, err := waiterL.Acquire(ctx, key)
			res <- result{le, err}
		}()
		// Find the waiter's queue key and revoke its lease.
		var lease clientv3.LeaseID
		for lease == 0 {
			resp, err := cli.Get(ctx, etcdlock.DefaultPrefix+key+"\x00", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range resp.Kvs {
				if !strings.HasSuffix(string(kv.Key), holder.Owner()) {
					lease = clientv3.LeaseID(kv.Lease)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := cli.Revoke(ctx, lease); err != nil {
			t.Fatal(err)
		}
		if err := holder.Release(ctx); err != nil {
			t.Fatal(err)
		}
		var got result
		select {
		case got = <-res:
		case <-time.After(3 * r.ttl):
			// Still waiting: it never reported acquired. Stop it.
			t.Logf("round %d: waiter still waiting after its lease was revoked", i)
			continue
		}
		if got.err != nil {
			t.Logf("round %d: waiter whose lease was revoked: %v", i, got.err)
			continue
		}
		_, held, perr := r.probe(ctx, key, got.le.Owner())
		third, terr := r.locker(t, lock.Options{TTL: r.ttl}).TryAcquire(ctx, key)
		if terr == nil {
			violations++
			t.Errorf("VIOLATION: "+"round %d: the waiter whose etcd lease was revoked reported the key acquired (token %d; its key exists: %v %v) and a third client was granted it as well (token %d)",
				i, got.le.Token(), held, perr, third.Token())
			third.Release(context.Background())
		} else if !errors.Is(terr, lock.ErrNotAcquired) || !held {
			violations++
			t.Errorf("VIOLATION: "+"round %d: waiter reported acquired without a key on the engine (held %v %v); third client: %v", i, held, perr, terr)
		}
		got.le.Release(context.Background())
	}
	t.Logf("%d violations", violations)
}

func TestWaiterLeaseExpiresOtherBackends(t *testing.T) {
	t.Skip("not applicable: Redis, Redlock, PostgreSQL, file and in-process waiters keep no lease on the engine while they wait; they poll or are notified and take the key with a fresh attempt")
}
