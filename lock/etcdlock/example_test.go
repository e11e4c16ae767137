package etcdlock_test

import (
	"context"
	"fmt"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
)

// A job that must run on one node at a time, stopping when the lease is
// lost.
func Example() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}, DialTimeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	locker, err := etcdlock.New(cli, lock.Options{TTL: 10 * time.Second, AutoRefresh: true})
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()

	ctx := context.Background()
	le, err := locker.Acquire(ctx, "jobs/nightly-report")
	if err != nil {
		log.Fatal(err)
	}
	defer le.Release(context.WithoutCancel(ctx))
	jobCtx, cancel := le.Context(ctx) // cancelled if the lease is lost
	defer cancel()
	// Pass le.Token() to storage so that a stale holder's writes are refused.
	fmt.Println("running with token", le.Token(), jobCtx.Err())
}
