package redishub

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/haita/haita/internal/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestConfirmations(t *testing.T) {
	var s Confirmations
	if s.Subscribed() || !s.Settled() {
		t.Fatal("zero value: want unsubscribed and settled")
	}
	if ready := s.Ready(); !closed(ready) {
		t.Fatal("Ready before any SUBSCRIBE: want closed")
	}

	sends := 0
	send := func() error { sends++; return nil }
	if err := s.Subscribe(send); err != nil || sends != 1 || !s.Subscribed() || s.Settled() {
		t.Fatalf("Subscribe: err %v, sends %d, subscribed %v, settled %v", err, sends, s.Subscribed(), s.Settled())
	}
	if err := s.Subscribe(send); err != nil || sends != 1 {
		t.Fatalf("second Subscribe sent again: err %v, sends %d", err, sends)
	}
	first, abandoned := s.Ready(), s.Ready()
	s.Abandon(abandoned)
	if closed(first) {
		t.Fatal("Ready closed before the confirmation")
	}
	if s.Confirm() {
		t.Fatal("the confirmation of a SUBSCRIBE sent reported as a resubscription")
	}
	if !closed(first) || closed(abandoned) || !s.Settled() {
		t.Fatalf("after Confirm: first closed %v, abandoned closed %v, settled %v", closed(first), closed(abandoned), s.Settled())
	}

	// go-redis resubscribes after a reconnect: a confirmation nobody sent.
	if !s.Confirm() || !s.Settled() {
		t.Fatal("an extra confirmation: want a resubscription, still settled")
	}

	s.Unsubscribe()
	if s.Subscribed() {
		t.Fatal("Unsubscribe: still subscribed")
	}
	fail := errors.New("down")
	if err := s.Subscribe(func() error { return fail }); !errors.Is(err, fail) || s.Subscribed() || !s.Settled() {
		t.Fatalf("failed send: err %v, subscribed %v, settled %v: want it uncounted", err, s.Subscribed(), s.Settled())
	}
}

func TestConn(t *testing.T) {
	srv := testserver.Redis(t, testserver.RedisOptions{})
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = c.Close() })

	var mu sync.Mutex
	var s Confirmations
	got := make(chan string, 10)
	conn := NewConn(c, func(ps *redis.PubSub) {
		for m := range ps.ChannelWithSubscriptions() {
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					mu.Lock()
					s.Confirm()
					mu.Unlock()
				}
			case *redis.Message:
				got <- m.Payload
			}
		}
	})
	if conn.Open() {
		t.Fatal("open before the first Subscribe")
	}
	if err := conn.Unsubscribe(t.Context(), "ch"); err != nil {
		t.Fatalf("Unsubscribe before opening: %v", err)
	}
	mu.Lock()
	err := s.Subscribe(func() error { return conn.Subscribe(t.Context(), "ch") })
	ready := s.Ready()
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if !conn.Open() {
		t.Fatal("not open after Subscribe")
	}
	<-ready
	if err := c.Publish(t.Context(), "ch", "hello").Err(); err != nil {
		t.Fatal(err)
	}
	if m := <-got; m != "hello" {
		t.Fatalf("message %q, want hello", m)
	}
	// Close waits for the reader: got is closed by nobody, so a reader
	// still running after Close would be reported by the leak check.
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLingers(t *testing.T) {
	var l Lingers
	ran := make(chan struct{})
	release := make(chan struct{})
	fired := l.AfterFunc(0, func() {
		close(ran)
		<-release
	})
	_ = fired
	stopped := l.AfterFunc(time.Hour, func() { t.Error("a stopped timer ran") })
	l.Stop(&stopped)
	if stopped != nil {
		t.Fatal("Stop left the timer set")
	}
	var none *time.Timer
	l.Stop(&none)
	<-ran
	waited := make(chan struct{})
	go func() {
		l.Wait()
		close(waited)
	}()
	if closed(waited) {
		t.Fatal("Wait returned while a timer's function runs")
	}
	close(release)
	<-waited
}
