package testserver

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EtcdCluster is a cluster of etcd members started by [Etcd] for one test. Its methods are safe
// for concurrent use. In a child process (see the package documentation) it only has endpoints:
// StopMember, StartMember and KillMember fail the test.
type EtcdCluster struct {
	t         testing.TB
	owner     bool
	endpoints []string

	mu      sync.Mutex
	members []*etcdMember
}

type etcdMember struct {
	bin    string
	name   string
	dir    string // the log here, the data in dir/data
	client int    // port
	peer   int    // port
	peers  string // --initial-cluster
	token  string // --initial-cluster-token
	p      *proc  // nil or exited when the member is down
}

// Etcd starts a cluster of members etcd members for test t (usually 1 or 3; at least 1), each
// on two free loopback ports in a directory of t.TempDir, and returns once a linearizable read
// succeeds through every member. The test's cleanup kills them. Etcd fails t when the cluster is
// not ready within 60 seconds, and skips t when etcd is not installed (see [Required]).
//
// In a child process that inherited the parent's cluster for this call (see the package
// documentation) it returns the parent's cluster.
func Etcd(t testing.TB, members int) *EtcdCluster {
	t.Helper()
	if members < 1 {
		t.Fatalf("testserver: Etcd(%d): a cluster needs at least one member", members)
		return nil
	}
	return inheritOrStart(t, "etcd",
		func(endpoints []string) *EtcdCluster { return &EtcdCluster{t: t, endpoints: endpoints} },
		func() (*EtcdCluster, []string, bool) { return startEtcd(t, members) })
}

// startEtcd starts a cluster of members members owned by t and killed by t's cleanup, and
// returns it with its endpoints. It fails or skips t itself and returns false when it cannot.
func startEtcd(t testing.TB, members int) (*EtcdCluster, []string, bool) {
	t.Helper()
	bin, ok := findBinary(t, "etcd", "etcd-server")
	if !ok {
		return nil, nil, false
	}
	c := &EtcdCluster{t: t, owner: true}
	t.Cleanup(c.killAll)
	base := t.TempDir()
	var errs []error
	// Retried as a whole with fresh ports and directories: a member that lost its port to
	// another process leaves the others waiting for it.
	for try := range 3 {
		err := c.start(bin, filepath.Join(base, strconv.Itoa(try)), members)
		if err == nil {
			return c, c.endpoints, true
		}
		c.killAll()
		errs = append(errs, err)
		if !errors.Is(err, errExited) {
			break
		}
	}
	t.Fatalf("testserver: starting %d etcd members: %v", members, errors.Join(errs...))
	return nil, nil, false
}

// start starts n fresh members in directories under base and waits until they serve reads.
func (c *EtcdCluster) start(bin, base string, n int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members, c.endpoints = nil, nil
	token := "haita-" + strings.ToLower(rand.Text())
	var peers []string
	for i := range n {
		client, err1 := freePort()
		peer, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		m := &etcdMember{
			bin:    bin,
			name:   "m" + strconv.Itoa(i),
			dir:    filepath.Join(base, "m"+strconv.Itoa(i)),
			client: client,
			peer:   peer,
			token:  token,
		}
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return err
		}
		c.members = append(c.members, m)
		c.endpoints = append(c.endpoints, m.endpoint())
		peers = append(peers, m.name+"="+m.peerURL())
	}
	for _, m := range c.members {
		m.peers = strings.Join(peers, ",")
		p, err := m.command().start()
		if err != nil {
			return err
		}
		m.p = p
	}
	// Wait for all members at once: one that exits (its port taken) stops the wait at once,
	// though the others would wait for it until the timeout.
	deadline := time.Now().Add(60 * time.Second)
	ready := make([]bool, n)
	for {
		var last error
		for i, m := range c.members {
			if !m.p.running() {
				return m.p.exitError()
			}
			if ready[i] {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			err := m.read(ctx)
			cancel()
			if err != nil {
				last = err
			}
			ready[i] = err == nil
		}
		if !slices.Contains(ready, false) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd not ready after 60s: %v\n%s", last, logTail(c.members[0].p.c.log))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *etcdMember) endpoint() string { return "http://127.0.0.1:" + strconv.Itoa(m.client) }
func (m *etcdMember) peerURL() string  { return "http://127.0.0.1:" + strconv.Itoa(m.peer) }

func (m *etcdMember) command() command {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") { // etcd reads its flags from ETCD_* too
			env = append(env, kv)
		}
	}
	return command{
		path: m.bin,
		args: []string{
			"--name", m.name,
			"--data-dir", filepath.Join(m.dir, "data"),
			"--listen-client-urls", m.endpoint(),
			"--advertise-client-urls", m.endpoint(),
			"--listen-peer-urls", m.peerURL(),
			"--initial-advertise-peer-urls", m.peerURL(),
			"--initial-cluster", m.peers,
			"--initial-cluster-state", "new", // ignored on restart: the data directory exists
			"--initial-cluster-token", m.token, // keeps members of other tests' clusters out
		},
		dir: m.dir,
		log: filepath.Join(m.dir, "etcd.log"),
		env: env,
	}
}

// read does a linearizable range request through the member's JSON gateway, which succeeds
// only when the member is up and the cluster has a leader and a quorum.
func (m *etcdMember) read(ctx context.Context) error {
	body := `{"key":"` + base64.StdEncoding.EncodeToString([]byte("haita/testserver/ready")) + `"}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.endpoint()+"/v3/kv/range", strings.NewReader(body))
	if err != nil {
		return err
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	var reply struct {
		Header json.RawMessage `json:"header"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &reply) != nil || reply.Header == nil {
		return fmt.Errorf("range through %s: %s: %s", m.endpoint(), resp.Status, b)
	}
	return nil
}

// listening reports whether the member accepts connections on its client port.
func (m *etcdMember) listening(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(m.client)))
	if err == nil {
		conn.Close()
	}
	return err
}

func (c *EtcdCluster) killAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.members {
		if m.p != nil {
			m.p.kill()
		}
	}
}

// Endpoints returns the members' client URLs, "http://127.0.0.1:port", in member order, for
// clientv3.Config.Endpoints. They stay the same across StopMember and StartMember.
func (c *EtcdCluster) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// member returns member i, failing the test when this process does not own the cluster or i
// is out of range.
func (c *EtcdCluster) member(op string, i int) *etcdMember {
	c.t.Helper()
	if !c.owner {
		notOwner(c.t, "EtcdCluster."+op)
		return nil
	}
	if i < 0 || i >= len(c.members) {
		c.t.Fatalf("testserver: EtcdCluster.%s(%d): the cluster has %d members", op, i, len(c.members))
		return nil
	}
	return c.members[i]
}

// StopMember stops member i (counting from 0, in the order of Endpoints) with SIGTERM, which
// hands leadership over first if it leads, and waits for it to exit. It does nothing when the
// member is already down.
func (c *EtcdCluster) StopMember(i int) {
	c.t.Helper()
	m := c.member("StopMember", i)
	if m == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.p != nil {
		m.p.stop(syscall.SIGTERM, 30*time.Second)
	}
}

// KillMember kills member i with SIGKILL and waits for it to exit. It does nothing when the
// member is already down.
func (c *EtcdCluster) KillMember(i int) {
	c.t.Helper()
	m := c.member("KillMember", i)
	if m == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.p != nil {
		m.p.kill()
	}
}

// StartMember starts member i again after StopMember or KillMember, on the same ports with the
// same data, and waits until a linearizable read succeeds through it — or, when too few members
// run for a quorum even with it, only until it listens. It fails the test when the member does
// not come up within 60 seconds. It does nothing when the member is running.
func (c *EtcdCluster) StartMember(i int) {
	c.t.Helper()
	m := c.member("StartMember", i)
	if m == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.p != nil && m.p.running() {
		return
	}
	up := 1
	for _, o := range c.members {
		if o != m && o.p != nil && o.p.running() {
			up++
		}
	}
	ready := m.read
	if up <= len(c.members)/2 {
		ready = m.listening
	}
	p, err := launch(func() (command, error) { return m.command(), nil }, 60*time.Second, ready)
	if err != nil {
		c.t.Fatalf("testserver: restarting etcd member %s (%s): %v", m.name, m.endpoint(), err)
		return
	}
	m.p = p
}
