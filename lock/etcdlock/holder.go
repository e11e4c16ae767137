package etcdlock

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haita/haita/lock"
)

var _ lock.HolderReader = (*backend)(nil)

// ReadHolder implements lock.HolderReader: the holder is the first key of
// the key's queue by create revision, which is its fencing token; its value
// is the holder's name. The expiry comes from the etcd lease it is bound
// to, read in a second request (whole seconds, as etcd counts them).
func (b *backend) ReadHolder(ctx context.Context, key string) (lock.HolderInfo, error) {
	resp, err := b.cli.Get(ctx, b.queue(key), clientv3.WithFirstCreate()...)
	if err != nil {
		return lock.HolderInfo{}, fmt.Errorf("etcdlock: holder: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return lock.HolderInfo{}, lock.ErrNoHolder
	}
	kv := resp.Kvs[0]
	info := lock.HolderInfo{Key: key, Holder: string(kv.Value), Token: lock.Token(kv.CreateRevision)}
	if kv.Lease != 0 {
		sent := time.Now()
		ttl, err := b.cli.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil {
			return lock.HolderInfo{}, fmt.Errorf("etcdlock: holder: lease: %w", err)
		}
		if ttl.TTL < 0 {
			return lock.HolderInfo{}, lock.ErrNoHolder // expired since the read
		}
		info.ExpiresAt = sent.Add(time.Duration(ttl.TTL) * time.Second)
	}
	return info, nil
}
