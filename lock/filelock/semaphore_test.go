package filelock_test

import (
	"os"
	"testing"

	"github.com/haita/haita/lock"
	"github.com/haita/haita/lock/filelock"
	"github.com/haita/haita/lock/locktest"
)

// semConfig shares one directory with the child processes of the
// multi-process tests through envDir.
func semConfig(t *testing.T) locktest.MultiConfig {
	dir := os.Getenv(envDir)
	if dir == "" {
		dir = t.TempDir()
		t.Setenv(envDir, dir)
	}
	return locktest.MultiConfig{
		NewSemaphore: func(_ testing.TB, opts lock.Options, limit int) (*lock.Semaphore, error) {
			return filelock.NewSemaphore(dir, opts, limit)
		},
		NewRWLocker: func(_ testing.TB, opts lock.Options) (*lock.RWLocker, error) {
			return filelock.NewRWLocker(dir, opts)
		},
	}
}

func TestSemaphoreConformance(t *testing.T) { locktest.RunSemaphore(t, semConfig(t)) }

func TestRWLockConformance(t *testing.T) { locktest.RunRWLock(t, semConfig(t)) }
