package bench

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
)

// etcdClient starts a one-member etcd for tb (the machine class of the
// issue's baseline) and returns a client on it.
func etcdClient(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cluster := testserver.Etcd(tb, 1)
	cli, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

// etcdPeers: haita's etcdlock and etcd's own concurrency.Mutex. Each Mutex
// user gets a Session of its own: two Mutexes on one prefix from one
// Session do not exclude each other. Sessions are made once, outside the
// timed loop, as their users would.
func etcdPeers(tb testing.TB, cli *clientv3.Client, workers int) (names []string, m map[string]mutex) {
	l, err := etcdlock.New(cli, lock.Options{TTL: benchTTL})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	// A free Session per concurrent locker: at most workers lock at once.
	sessions := make(chan *concurrency.Session, workers)
	for range workers {
		s, err := concurrency.NewSession(cli, concurrency.WithTTL(int(benchTTL/time.Second)))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = s.Close() })
		sessions <- s
	}
	m = map[string]mutex{
		"haita": mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
			le, err := l.Acquire(ctx, key)
			if err != nil {
				return nil, err
			}
			return le.Release, nil
		}),
		"etcd-mutex": mutexFunc(func(ctx context.Context, key string) (func(context.Context) error, error) {
			s := <-sessions
			mu := concurrency.NewMutex(s, key)
			if err := mu.Lock(ctx); err != nil {
				sessions <- s
				return nil, err
			}
			return func(ctx context.Context) error {
				defer func() { sessions <- s }()
				return mu.Unlock(ctx)
			}, nil
		}),
	}
	return []string{"etcd-mutex", "haita"}, m
}

// BenchmarkEtcdUncontended: one goroutine acquires and releases one key
// nobody else wants, again and again.
func BenchmarkEtcdUncontended(b *testing.B) {
	cli := etcdClient(b)
	names, m := etcdPeers(b, cli, 1)
	benchUncontended(b, names, m, "etcdu/")
}

// BenchmarkEtcdHotKey: 8 goroutines on one key, each taking it again as
// soon as it let go.
func BenchmarkEtcdHotKey(b *testing.B) {
	cli := etcdClient(b)
	const workers = 8
	names, m := etcdPeers(b, cli, workers)
	benchHotKey(b, names, m, "etcdh/", workers)
}
