package singleton

import (
	"context"
	"errors"
	"fmt"
)

// Leadership is a leadership a job can run under, such as an
// *election.Leadership: Err is nil while it lasts, and Context derives a
// context that ends with it.
type Leadership interface {
	Context(parent context.Context) (context.Context, context.CancelFunc)
	Err() error
}

// ErrNotLeading is returned by [Runner.RunLeading] when the leadership had
// ended before the job could start, or ended while it ran.
var ErrNotLeading = errors.New("singleton: not leading")

// RunLeading runs fn as [Runner.Run] does, and only while ld lasts: when ld
// has ended already it returns an error matching [ErrNotLeading] without
// running fn, and fn's context is cancelled when ld ends (its cause is then
// ld's Err), as when the job's own lease is lost. An error that fn returns
// after ld ended is wrapped with ErrNotLeading. Run's lease still keeps two
// leaders of overlapping terms (one that has not yet seen its end) from
// running the job at once.
func (r *Runner) RunLeading(ctx context.Context, ld Leadership, job string, fn func(ctx context.Context) error) error {
	if err := ld.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotLeading, err)
	}
	lctx, cancel := ld.Context(ctx)
	defer cancel()
	err := r.Run(lctx, job, fn)
	if lerr := ld.Err(); lerr != nil && err != nil {
		return fmt.Errorf("%w (%w): %w", ErrNotLeading, lerr, err)
	}
	return err
}
