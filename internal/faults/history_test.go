package faults

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op is one recorded operation. Times are wall-clock nanoseconds, which
// every process on the machine reads from the same clock.
type op struct {
	Kind   string `json:"kind"`          // acquire, release, read, write
	Res    string `json:"res,omitempty"` // pg or file, for read and write
	Client int    `json:"client"`
	Call   int64  `json:"call"`
	Ret    int64  `json:"ret"`
	Token  uint64 `json:"token,omitempty"`
	Value  int64  `json:"value,omitempty"`
	OK     bool   `json:"ok"`
}

// recorder collects one process's operations. Safe for concurrent use.
type recorder struct {
	mu  sync.Mutex
	ops []op
}

func now() int64 { return time.Now().UnixNano() }

func (r *recorder) add(o op) {
	r.mu.Lock()
	r.ops = append(r.ops, o)
	r.mu.Unlock()
}

func (r *recorder) save(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, o := range r.ops {
		if err := enc.Encode(o); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loadHistories reads every hist-*.jsonl file in dir.
func loadHistories(t testing.TB, dir string) []op {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "hist-*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var all []op
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(f)
		for dec.More() {
			var o op
			if err := dec.Decode(&o); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			all = append(all, o)
		}
		f.Close()
	}
	return all
}

// The mutex model: the state is the holder's client number plus one, zero
// when free. A history of grants and releases is linearizable under it
// exactly when no two holds overlap.

type mutexIn struct {
	acquire bool
	client  int
}

var mutexModel = porcupine.Model{
	Init: func() any { return 0 },
	Step: func(state, input, _ any) (bool, any) {
		s, in := state.(int), input.(mutexIn)
		if in.acquire {
			return s == 0, in.client + 1
		}
		return s == in.client+1, 0
	},
	DescribeOperation: func(input, _ any) string {
		in := input.(mutexIn)
		if in.acquire {
			return fmt.Sprintf("acquire(%d)", in.client)
		}
		return fmt.Sprintf("release(%d)", in.client)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("holder %d", state.(int)-1) },
}

// The fenced-register model: a value and the greatest token that wrote it.
// A write with a token not smaller than the fence is accepted and raises
// the fence; a smaller one is refused and changes nothing; a read returns
// the value.

type regState struct {
	value int64
	fence uint64
}

type regIn struct {
	write bool
	token uint64
	value int64
}

type regOut struct {
	ok    bool
	value int64
}

var registerModel = porcupine.Model{
	Init: func() any { return regState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(regState), input.(regIn), output.(regOut)
		if !in.write {
			return out.value == s.value, s
		}
		if out.ok {
			return in.token >= s.fence, regState{value: in.value, fence: in.token}
		}
		return in.token < s.fence, s
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regIn), output.(regOut)
		if !in.write {
			return fmt.Sprintf("read() -> %d", out.value)
		}
		return fmt.Sprintf("write(token %d, %d) -> %v", in.token, in.value, out.ok)
	},
	DescribeState: func(state any) string {
		s := state.(regState)
		return fmt.Sprintf("value %d fence %d", s.value, s.fence)
	},
}

// mutexHistory turns recorded grants and releases into porcupine
// operations.
func mutexHistory(ops []op) []porcupine.Operation {
	var h []porcupine.Operation
	for _, o := range ops {
		switch o.Kind {
		case "acquire", "release":
			h = append(h, porcupine.Operation{ClientId: o.Client, Input: mutexIn{acquire: o.Kind == "acquire", client: o.Client},
				Call: o.Call, Return: o.Ret})
		}
	}
	return h
}

// registerHistory turns the reads and writes of resource res into
// porcupine operations.
func registerHistory(ops []op, res string) []porcupine.Operation {
	var h []porcupine.Operation
	for _, o := range ops {
		if o.Res != res {
			continue
		}
		h = append(h, porcupine.Operation{ClientId: o.Client,
			Input: regIn{write: o.Kind == "write", token: o.Token, value: o.Value},
			Call:  o.Call, Output: regOut{ok: o.OK, value: o.Value}, Return: o.Ret})
	}
	return h
}

// checkLinearizable fails t unless h is linearizable under m. A check that
// times out is reported, not passed.
func checkLinearizable(t testing.TB, what string, m porcupine.Model, h []porcupine.Operation) {
	t.Helper()
	res, info := porcupine.CheckOperationsVerbose(m, h, time.Minute)
	switch res {
	case porcupine.Ok:
		t.Logf("%s: %d operations linearizable", what, len(h))
	case porcupine.Unknown:
		t.Errorf("%s: linearizability check of %d operations timed out", what, len(h))
	default:
		path := filepath.Join(t.TempDir(), "history.html")
		if os.Getenv("HAITA_FAULTS_KEEP") != "" {
			path = filepath.Join(os.TempDir(), fmt.Sprintf("haita-faults-%s-%d.html", what, os.Getpid()))
		}
		_ = porcupine.VisualizePath(m, info, path)
		t.Errorf("%s: %d operations NOT linearizable (visualization: %s)", what, len(h), path)
	}
}

// checkInvariants checks the plain invariants of a workload's resource:
// the final value equals the acknowledged increments, and accepted writes
// never carry a smaller token than an earlier accepted write.
func checkInvariants(t testing.TB, what string, ops []op, res string, final int64, accepted []uint64) {
	t.Helper()
	var acked int64
	for _, o := range ops {
		if o.Res == res && o.Kind == "write" && o.OK {
			acked++
		}
	}
	if final != acked {
		t.Errorf("%s: final value %d, acknowledged increments %d", what, final, acked)
	}
	if accepted != nil {
		if len(accepted) != int(acked) {
			t.Errorf("%s: %d writes in the accept log, %d acknowledged", what, len(accepted), acked)
		}
		for i := 1; i < len(accepted); i++ {
			if accepted[i] < accepted[i-1] {
				t.Errorf("%s: write with token %d accepted after token %d", what, accepted[i], accepted[i-1])
			}
		}
	}
}

// checkTokensIncrease fails t unless every grant's token is greater than
// the previous grant's.
func checkTokensIncrease(t testing.TB, what string, ops []op) {
	t.Helper()
	toks := tokensInGrantOrder(ops)
	for i := 1; i < len(toks); i++ {
		if toks[i] <= toks[i-1] {
			t.Errorf("%s: grant %d has token %d after token %d", what, i, toks[i], toks[i-1])
		}
	}
}

// tokensInGrantOrder returns the tokens of the grants ordered by the time
// each grant returned. Grants do not overlap when the mutex model holds, so
// this is the order of the holds.
func tokensInGrantOrder(ops []op) []uint64 {
	var acq []op
	for _, o := range ops {
		if o.Kind == "acquire" {
			acq = append(acq, o)
		}
	}
	slices.SortFunc(acq, func(a, b op) int { return cmp.Compare(a.Ret, b.Ret) })
	out := make([]uint64, len(acq))
	for i, o := range acq {
		out[i] = o.Token
	}
	return out
}
