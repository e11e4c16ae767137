package etcdlock

import (
	"context"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// watcher keeps one watch on the deletes under a Locker's prefix open for
// the Locker's whole life, and hands each delete to the local waiters of
// the lock key it belongs to. A watch opened once and kept is served from
// etcd's synced watcher group as events happen; one opened per wait lands
// in the unsynced group (served every 100ms) whenever a write commits while
// it is being registered, which on a hot key is often.
//
// When the watch breaks (a compaction, a member that lost its leader) every
// waiter is told to read its queue again, and a new watch is opened; a
// waiter reads only once the new watch is in effect, so no delete after its
// read is missed.
type watcher struct {
	cli    clientv3.Watcher
	prefix string
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	up      bool          // the watch is in effect
	ready   chan struct{} // closed when up becomes true
	waiters map[string]map[*queueWait]struct{}
}

// deleted is one delete in a queue, as a waiter needs it.
type deleted struct {
	key    string
	create int64 // the deleted key's create revision; 0 when unknown
	rev    int64 // the revision of the delete
}

// queueWait is one waiter's subscription to the deletes of one queue.
type queueWait struct {
	queue string
	c     chan struct{} // wake-ups, buffered

	// Guarded by watcher.mu.
	events []deleted
	resync bool // events may have been lost: read the queue again
}

func newWatcher(cli clientv3.Watcher, prefix string) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{
		cli: cli, prefix: prefix, cancel: cancel, done: make(chan struct{}),
		ready: make(chan struct{}), waiters: make(map[string]map[*queueWait]struct{}),
	}
	go w.run(ctx)
	return w
}

// join subscribes to the deletes in queue and returns once the watch is in
// effect, so that every delete committed after join returns is delivered.
// The caller must call leave.
func (w *watcher) join(ctx context.Context, queue string) (*queueWait, error) {
	qw := &queueWait{queue: queue, c: make(chan struct{}, 1)}
	w.mu.Lock()
	set := w.waiters[queue]
	if set == nil {
		set = make(map[*queueWait]struct{})
		w.waiters[queue] = set
	}
	set[qw] = struct{}{}
	w.mu.Unlock()
	if err := w.await(ctx); err != nil {
		w.leave(qw)
		return nil, err
	}
	return qw, nil
}

// await returns once the watch is in effect, or ctx's error.
func (w *watcher) await(ctx context.Context) error {
	w.mu.Lock()
	up, ready := w.up, w.ready
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

func (w *watcher) leave(qw *queueWait) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if set := w.waiters[qw.queue]; set != nil {
		delete(set, qw)
		if len(set) == 0 {
			delete(w.waiters, qw.queue)
		}
	}
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

func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	const maxBackoff = 2 * time.Second
	backoff := 10 * time.Millisecond
	for {
		if w.watch(ctx) {
			backoff = 10 * time.Millisecond
		}
		w.setDown()
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
func (w *watcher) watch(ctx context.Context) bool {
	// Requiring a leader makes a member cut off from the quorum cancel the
	// watch instead of leaving it silent; the next one may reach another.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.cli.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithFilterPut(),
		clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	created := false
	for wr := range wch {
		if wr.Err() != nil || wr.Canceled {
			break
		}
		if wr.Created {
			created = true
			w.setUp()
			continue
		}
		if !created {
			// Events before the created notification cannot come; be safe.
			break
		}
		w.deliver(wr.Events)
	}
	return created
}

func (w *watcher) setUp() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.up = true
	close(w.ready)
}

// setDown marks the watch broken and tells every waiter to read its queue
// again once the next watch is in effect.
func (w *watcher) setDown() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.up {
		w.up = false
		w.ready = make(chan struct{})
	}
	for _, set := range w.waiters {
		for qw := range set {
			qw.resync = true
			qw.wake()
		}
	}
}

func (w *watcher) deliver(evs []*clientv3.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range evs {
		if ev.Type != clientv3.EventTypeDelete {
			continue
		}
		key := string(ev.Kv.Key)
		i := strings.IndexByte(key, 0)
		if i < 0 {
			continue // not a queue key
		}
		set := w.waiters[key[:i+1]]
		if len(set) == 0 {
			continue
		}
		d := deleted{key: key, rev: ev.Kv.ModRevision}
		if ev.PrevKv != nil {
			d.create = ev.PrevKv.CreateRevision
		}
		for qw := range set {
			if d.create == 0 {
				qw.resync = true // compacted away: which key it was is unknown
			} else {
				qw.events = append(qw.events, d)
			}
			qw.wake()
		}
	}
}

// close stops the watch and waits for it.
func (w *watcher) close() {
	w.cancel()
	<-w.done
}

func (qw *queueWait) wake() {
	select {
	case qw.c <- struct{}{}:
	default:
	}
}
