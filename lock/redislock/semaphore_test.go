package redislock_test

import (
	"testing"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/locktest"
	"github.com/haita/haita/lock/redislock"
)

func semConfig(c redislock.Client) locktest.MultiConfig {
	return locktest.MultiConfig{
		NewSemaphore: func(_ testing.TB, opts lock.Options, limit int) (*lock.Semaphore, error) {
			return redislock.NewSemaphore(c, opts, limit)
		},
		NewRWLocker: func(_ testing.TB, opts lock.Options) (*lock.RWLocker, error) {
			return redislock.NewRWLocker(c, opts)
		},
	}
}

func TestSemaphoreConformance(t *testing.T) { locktest.RunSemaphore(t, semConfig(single(t))) }

func TestRWLockConformance(t *testing.T) { locktest.RunRWLock(t, semConfig(single(t))) }

func TestSemaphoreConformanceCluster(t *testing.T) {
	locktest.RunSemaphore(t, semConfig(cluster(t)))
}
