package faults

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/haita/haita/internal/testserver"
)

func TestMain(m *testing.M) {
	testserver.MainWith(m,
		// toxiproxy's links end their goroutines asynchronously after a
		// proxy stops.
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).write"),
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"),
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/stream.(*ChanReader).Read"),
		// etcd's client closes its gRPC connection asynchronously.
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

// longBuild is set by the build tag faultslong.
var longBuild bool

// long reports whether the long variant runs: the build tag faultslong or
// HAITA_FAULTS_LONG=1.
func long() bool { return longBuild || os.Getenv("HAITA_FAULTS_LONG") == "1" }

// pick returns short or, in the long variant, long.
func pick[T any](short, long_ T) T {
	if long() {
		return long_
	}
	return short
}
