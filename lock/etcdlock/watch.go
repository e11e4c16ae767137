package etcdlock

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haita/haita/lock"
)

// watcher keeps, for each lock key with local waiters, one watch on the
// deletes in its queue, and hands each delete to those waiters. The watch
// stays open while the key has waiters and for watchLinger after the last
// leaves, so on a busy key it outlives every single wait. A watch kept open
// is served from etcd's synced watcher group as events happen; one opened
// per wait lands in the unsynced group (served every 100ms) whenever a write
// commits while it is being registered, which on a hot key is often. Keys
// nobody waits for have no watch, so their releases cost no events.
//
// When a watch breaks (a compaction, a member that lost its leader) every
// waiter of its key is told to read its queue again, and a new watch is
// opened; a waiter reads only once the new watch is in effect, so no delete
// after its read is missed.
type watcher struct {
	cli clientv3.Watcher
	wg  sync.WaitGroup

	mu     sync.Mutex
	keys   map[string]*keyWatch // by queue prefix
	closed bool
}

// watchLinger is how long a key's watch stays open after its last waiter
// left.
const watchLinger = 10 * time.Second

// keyWatch is the watch on one queue and its local waiters. Guarded by
// watcher.mu.
type keyWatch struct {
	queue   string
	cancel  context.CancelFunc
	up      bool          // the watch is in effect
	ready   chan struct{} // closed when up becomes true
	waiters map[*queueWait]struct{}
	idle    *time.Timer // closes the watch after watchLinger without waiters
}

// deleted is one delete in a queue, as a waiter needs it.
type deleted struct {
	key string
	rev int64 // the revision of the delete
}

// queueWait is one waiter's subscription to the deletes of one queue.
type queueWait struct {
	kw *keyWatch
	c  chan struct{} // wake-ups, buffered

	// Guarded by watcher.mu.
	events []deleted
	resync bool // events may have been lost: read the queue again
}

func newWatcher(cli clientv3.Watcher) *watcher {
	return &watcher{cli: cli, keys: make(map[string]*keyWatch)}
}

// join subscribes to the deletes in queue and returns once its watch is in
// effect, so that every delete committed after join returns is delivered.
// The caller must call leave.
func (w *watcher) join(ctx context.Context, queue string) (*queueWait, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, lock.ErrClosed
	}
	kw := w.keys[queue]
	if kw == nil {
		wctx, cancel := context.WithCancel(context.Background())
		kw = &keyWatch{queue: queue, cancel: cancel, ready: make(chan struct{}), waiters: make(map[*queueWait]struct{})}
		w.keys[queue] = kw
		w.wg.Go(func() { w.run(wctx, kw) })
	}
	if kw.idle != nil {
		kw.idle.Stop()
		kw.idle = nil
	}
	qw := &queueWait{kw: kw, c: make(chan struct{}, 1)}
	kw.waiters[qw] = struct{}{}
	w.mu.Unlock()
	if err := w.await(ctx, qw); err != nil {
		w.leave(qw)
		return nil, err
	}
	return qw, nil
}

// watched reports whether queue has a watch: it had local waiters within
// the last watchLinger.
func (w *watcher) watched(queue string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.keys[queue] != nil
}

// await returns once qw's watch is in effect, or ctx's error.
func (w *watcher) await(ctx context.Context, qw *queueWait) error {
	w.mu.Lock()
	up, ready := qw.kw.up, qw.kw.ready
	w.mu.Unlock()
	if up {
		return nil
	}
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// leave ends qw's subscription; the key's watch closes after watchLinger
// unless another waiter joins.
func (w *watcher) leave(qw *queueWait) {
	w.mu.Lock()
	defer w.mu.Unlock()
	kw := qw.kw
	delete(kw.waiters, qw)
	if len(kw.waiters) > 0 || w.closed || kw.idle != nil {
		return
	}
	kw.idle = time.AfterFunc(watchLinger, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(kw.waiters) == 0 && w.keys[kw.queue] == kw {
			delete(w.keys, kw.queue)
			kw.cancel()
		}
	})
}

// take returns the deletes delivered since the last take, and whether the
// waiter must read its queue again.
func (w *watcher) take(qw *queueWait) ([]deleted, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	evs, resync := qw.events, qw.resync
	qw.events, qw.resync = nil, false
	return evs, resync
}

func (w *watcher) run(ctx context.Context, kw *keyWatch) {
	const maxBackoff = 2 * time.Second
	backoff := 10 * time.Millisecond
	for {
		if w.watch(ctx, kw) {
			backoff = 10 * time.Millisecond
		}
		w.setDown(kw)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// watch runs one watch until it breaks or ctx ends, and reports whether it
// was in effect.
func (w *watcher) watch(ctx context.Context, kw *keyWatch) bool {
	// Requiring a leader makes a member cut off from the quorum cancel the
	// watch instead of leaving it silent; the next one may reach another.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.cli.Watch(wctx, kw.queue, clientv3.WithPrefix(), clientv3.WithFilterPut(),
		clientv3.WithCreatedNotify())
	created := false
	for wr := range wch {
		if wr.Err() != nil || wr.Canceled {
			break
		}
		if wr.Created {
			created = true
			w.setUp(kw)
			continue
		}
		if !created {
			break // events come only after the created notification
		}
		w.deliver(kw, wr.Events)
	}
	return created
}

func (w *watcher) setUp(kw *keyWatch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	kw.up = true
	close(kw.ready)
}

// setDown marks kw's watch broken and tells its waiters to read their
// queue again once the next watch is in effect.
func (w *watcher) setDown(kw *keyWatch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if kw.up {
		kw.up = false
		kw.ready = make(chan struct{})
	}
	for qw := range kw.waiters {
		qw.resync = true
		qw.wake()
	}
}

func (w *watcher) deliver(kw *keyWatch, evs []*clientv3.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range evs {
		if ev.Type != clientv3.EventTypeDelete {
			continue
		}
		d := deleted{key: string(ev.Kv.Key), rev: ev.Kv.ModRevision}
		for qw := range kw.waiters {
			qw.events = append(qw.events, d)
			qw.wake()
		}
	}
}

// close stops every watch and waits for them.
func (w *watcher) close() {
	w.mu.Lock()
	w.closed = true
	for _, kw := range w.keys {
		if kw.idle != nil {
			kw.idle.Stop()
		}
		kw.cancel()
	}
	w.keys = nil
	w.mu.Unlock()
	w.wg.Wait()
}

func (qw *queueWait) wake() {
	select {
	case qw.c <- struct{}{}:
	default:
	}
}
