//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package filelock

// bootID returns "" where no boot id is read: every token is then written
// with fsync (see next).
func bootID() string { return "" }
