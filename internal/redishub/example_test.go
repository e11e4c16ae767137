package redishub_test

import (
	"fmt"

	"github.com/haita/haita/internal/redishub"
)

// A waiter waits for the channel from Ready: once Redis has confirmed the
// SUBSCRIBE, no message published afterwards can be missed. A confirmation
// that no SUBSCRIBE asked for is go-redis resubscribing after a reconnect.
func ExampleConfirmations() {
	var s redishub.Confirmations
	_ = s.Subscribe(func() error { return nil }) // sends SUBSCRIBE
	ready := s.Ready()
	fmt.Println("resubscribed:", s.Confirm()) // the reader sees the confirmation
	<-ready
	fmt.Println("settled:", s.Settled())
	fmt.Println("resubscribed:", s.Confirm()) // after a reconnect
	// Output:
	// resubscribed: false
	// settled: true
	// resubscribed: true
}
