package etcdlock_test

import (
	"testing"

	"github.com/haita/haita/internal/testserver"
	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/etcdlock"
	"github.com/haita/haita/lock/locktest"
)

func semConfig(t *testing.T) locktest.MultiConfig {
	cli := client(t, testserver.Etcd(t, 1).Endpoints())
	return locktest.MultiConfig{
		TTL: ttl,
		NewSemaphore: func(_ testing.TB, opts lock.Options, limit int) (*lock.Semaphore, error) {
			return etcdlock.NewSemaphore(cli, opts, limit)
		},
		NewRWLocker: func(_ testing.TB, opts lock.Options) (*lock.RWLocker, error) {
			return etcdlock.NewRWLocker(cli, opts)
		},
	}
}

func TestSemaphoreConformance(t *testing.T) { locktest.RunSemaphore(t, semConfig(t)) }

func TestRWLockConformance(t *testing.T) { locktest.RunRWLock(t, semConfig(t)) }
