package faults

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestModelsCatchViolations proves the checkers fail the histories they
// exist to catch: two holds that overlap, a stale write accepted after a
// newer one, a lost update, and tokens that do not increase.
func TestModelsCatchViolations(t *testing.T) {
	overlap := []op{
		{Kind: "acquire", Client: 0, Call: 0, Ret: 10, Token: 1},
		{Kind: "acquire", Client: 1, Call: 20, Ret: 30, Token: 2},
		{Kind: "release", Client: 0, Call: 40, Ret: 50},
		{Kind: "release", Client: 1, Call: 60, Ret: 70},
	}
	if porcupine.CheckOperations(mutexModel, mutexHistory(overlap)) {
		t.Error("mutex model accepted overlapping holds")
	}
	serial := []op{
		{Kind: "acquire", Client: 0, Call: 0, Ret: 10, Token: 1},
		{Kind: "release", Client: 0, Call: 20, Ret: 30},
		{Kind: "acquire", Client: 1, Call: 25, Ret: 40, Token: 2},
		{Kind: "release", Client: 1, Call: 50, Ret: 60},
	}
	if !porcupine.CheckOperations(mutexModel, mutexHistory(serial)) {
		t.Error("mutex model refused serial holds")
	}
	stale := []op{
		{Kind: "write", Res: "pg", Call: 0, Ret: 10, Token: 2, Value: 1, OK: true},
		{Kind: "write", Res: "pg", Call: 20, Ret: 30, Token: 1, Value: 2, OK: true},
	}
	if porcupine.CheckOperations(registerModel, registerHistory(stale, "pg")) {
		t.Error("register model accepted a stale write after a newer one")
	}
	lost := []op{
		{Kind: "read", Res: "pg", Client: 0, Call: 0, Ret: 10, Value: 0},
		{Kind: "read", Res: "pg", Client: 1, Call: 0, Ret: 10, Value: 0},
		{Kind: "write", Res: "pg", Client: 0, Call: 20, Ret: 30, Token: 1, Value: 1, OK: true},
		{Kind: "write", Res: "pg", Client: 1, Call: 40, Ret: 50, Token: 2, Value: 1, OK: true},
		{Kind: "read", Res: "pg", Client: 0, Call: 60, Ret: 70, Value: 1},
	}
	// Linearizable as a register, yet one increment is lost: the invariant
	// catches what the register model cannot.
	ft := &fakeT{}
	checkInvariants(ft, "lost", lost, "pg", 1, nil)
	if !ft.failed {
		t.Error("invariant check accepted a lost update")
	}
	ft = &fakeT{}
	checkInvariants(ft, "order", nil, "file", 0, []uint64{3, 2})
	if !ft.failed {
		t.Error("invariant check accepted a smaller token after a greater one")
	}
	ft = &fakeT{}
	checkTokensIncrease(ft, "tokens", serial[:0:0])
	checkTokensIncrease(ft, "tokens", []op{{Kind: "acquire", Ret: 1, Token: 5}, {Kind: "acquire", Ret: 2, Token: 5}})
	if !ft.failed {
		t.Error("token check accepted a repeated token")
	}
}

// fakeT records failures instead of failing the test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper()               {}
func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Fatalf(string, ...any) { f.failed = true }
func (f *fakeT) Logf(string, ...any)   {}
