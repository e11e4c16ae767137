package testserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RedisOptions configures [Redis]. The zero value is a server without persistence.
type RedisOptions struct {
	// AppendOnly turns on the append-only file with appendfsync always, so that whatever was
	// written before Stop or Kill is there again after Start. The default is no persistence at
	// all: a restarted server is empty.
	AppendOnly bool
	// Args are extra redis-server arguments, appended after the defaults so they override them,
	// for example []string{"--maxmemory", "10mb"}. The default is none.
	Args []string
}

// RedisServer is a redis-server process started by [Redis] for one test. Its methods are safe
// for concurrent use. In a child process (see the package documentation) it only has an
// address: Stop, Kill, Start, Pause and Resume fail the test.
type RedisServer struct {
	t     testing.TB
	owner bool
	addr  string // "127.0.0.1:port"

	bin        string
	dir        string
	port       int
	appendOnly bool
	args       []string

	mu     sync.Mutex
	p      *proc // nil or exited when the server is down
	paused bool
}

// Redis starts a fresh redis-server for test t, on a free loopback port, in a directory of
// t.TempDir, and returns once it answers PING. The test's cleanup kills it. Redis fails t when
// the server does not start within 30 seconds, and skips t when redis-server is not installed
// (see [Required]).
//
// In a child process that inherited the parent's server for this call (see the package
// documentation) it returns the parent's server and opts are ignored.
func Redis(t testing.TB, opts RedisOptions) *RedisServer {
	t.Helper()
	return inheritOrStart(t, "redis",
		func(addr string) *RedisServer { return &RedisServer{t: t, addr: addr} },
		func() (*RedisServer, string, bool) {
			t.Helper()
			bin, ok := findBinary(t, "redis-server", "redis-server")
			if !ok {
				return nil, "", false
			}
			s, err := startRedis(t, bin, opts)
			if err != nil {
				t.Fatal(err)
				return nil, "", false
			}
			return s, s.addr, true
		})
}

// startRedis starts a redis-server owned by t and killed by t's cleanup.
func startRedis(t testing.TB, bin string, opts RedisOptions) (*RedisServer, error) {
	s := &RedisServer{
		t:          t,
		owner:      true,
		bin:        bin,
		dir:        t.TempDir(),
		appendOnly: opts.AppendOnly,
		args:       opts.Args,
	}
	t.Cleanup(s.Kill)
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	s.p, err = launch(func() (command, error) {
		port, err := freePort()
		s.port = port
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		return s.command(), err
	}, 30*time.Second, s.ping)
	return s, err
}

func (s *RedisServer) command() command {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "", // stdout, which is the log file
		"--save", "",
	}
	if s.appendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	return command{
		path: s.bin,
		args: append(args, s.args...),
		dir:  s.dir,
		log:  filepath.Join(s.dir, "redis.log"),
	}
}

func (s *RedisServer) ping(ctx context.Context) error {
	reply, err := redisDo(ctx, s.addr, "PING")
	if err == nil && reply != "PONG" {
		err = fmt.Errorf("PING answered %q", reply)
	}
	return err
}

// Addr returns the server's address, "127.0.0.1:port". It stays the same across Stop and Start.
func (s *RedisServer) Addr() string { return s.addr }

// Stop shuts the server down gracefully with SHUTDOWN NOSAVE, or SHUTDOWN SAVE when it was
// started with AppendOnly, and waits for it to exit; a paused server is resumed first. Stop
// does nothing when the server is already down.
func (s *RedisServer) Stop() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "RedisServer.Stop")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p == nil || !s.p.running() {
		return
	}
	if s.paused {
		s.p.signalGroup(syscall.SIGCONT)
		s.paused = false
	}
	mode := "NOSAVE"
	if s.appendOnly {
		mode = "SAVE"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Success closes the connection without a reply; SIGTERM is the fallback either way.
	if _, err := redisDo(ctx, s.addr, "SHUTDOWN", mode); err != nil && !errors.Is(err, io.EOF) {
		s.p.signal(syscall.SIGTERM)
	}
	if !s.p.waitExit(20 * time.Second) {
		s.p.stop(syscall.SIGTERM, 10*time.Second)
	}
}

// Kill kills the server with SIGKILL, paused or not, and waits for it to exit. Kill does
// nothing when the server is already down.
func (s *RedisServer) Kill() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "RedisServer.Kill")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p != nil {
		s.p.kill()
	}
	s.paused = false
}

// Start starts the server again after Stop or Kill, on the same port and in the same directory,
// and waits until it answers PING (having loaded its append-only file, if any). It fails the
// test when the server does not come up within 30 seconds. Start does nothing when the server is
// running.
func (s *RedisServer) Start() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "RedisServer.Start")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p != nil && s.p.running() {
		return
	}
	p, err := launch(func() (command, error) { return s.command(), nil }, 30*time.Second, s.ping)
	if err != nil {
		s.t.Fatalf("testserver: restarting redis-server on %s: %v", s.addr, err)
		return
	}
	s.p = p
}

// Pause stops the server process with SIGSTOP: it keeps its connections but answers nothing
// until Resume, as a server stalled by the operating system or a long pause would.
func (s *RedisServer) Pause() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "RedisServer.Pause")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p != nil && s.p.running() {
		s.p.signalGroup(syscall.SIGSTOP)
		s.paused = true
	}
}

// Resume continues a server stopped by Pause with SIGCONT.
func (s *RedisServer) Resume() {
	s.t.Helper()
	if !s.owner {
		notOwner(s.t, "RedisServer.Resume")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.p != nil && s.p.running() {
		s.p.signalGroup(syscall.SIGCONT)
	}
	s.paused = false
}

// RedisClusterServer is a Redis Cluster of masters without replicas, started by
// [RedisCluster] for one test. In a child process it only has addresses.
type RedisClusterServer struct {
	addrs []string
	nodes []*RedisServer
}

// RedisCluster starts masters (at least 3) cluster-enabled redis-servers for test t, joins them
// with `redis-cli --cluster create`, which spreads the 16384 slots over them, and returns once
// every node reports cluster_state:ok and knows every other node. The test's cleanup kills them.
// Nodes run with cluster-node-timeout 5000 (milliseconds), so a stopped node is noticed quickly.
// RedisCluster fails t when the cluster is not ready within 60 seconds, and skips t when
// redis-server or redis-cli is not installed (see [Required]).
func RedisCluster(t testing.TB, masters int) *RedisClusterServer {
	t.Helper()
	if masters < 3 {
		t.Fatalf("testserver: RedisCluster(%d): a Redis Cluster needs at least 3 masters", masters)
		return nil
	}
	return inheritOrStart(t, "redis-cluster",
		func(addrs []string) *RedisClusterServer {
			c := &RedisClusterServer{addrs: addrs}
			for _, a := range addrs {
				c.nodes = append(c.nodes, &RedisServer{t: t, addr: a})
			}
			return c
		},
		func() (*RedisClusterServer, []string, bool) { return startRedisCluster(t, masters) })
}

// startRedisCluster starts a cluster of masters nodes owned by t and killed by t's cleanup,
// and returns it with its addresses. It fails or skips t itself and returns false when it
// cannot.
func startRedisCluster(t testing.TB, masters int) (*RedisClusterServer, []string, bool) {
	t.Helper()
	bin, ok := findBinary(t, "redis-server", "redis-server")
	if !ok {
		return nil, nil, false
	}
	cli, ok := findBinary(t, "redis-cli", "redis-tools")
	if !ok {
		return nil, nil, false
	}
	c := &RedisClusterServer{}
	for range masters {
		s, err := startRedis(t, bin, RedisOptions{Args: []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", // in --dir
			"--cluster-node-timeout", "5000",
		}})
		if err != nil {
			t.Fatal(err)
			return nil, nil, false
		}
		c.nodes = append(c.nodes, s)
		c.addrs = append(c.addrs, s.addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	create := command{
		path: cli,
		args: append(append([]string{"--cluster", "create"}, c.addrs...), "--cluster-yes"),
		dir:  c.nodes[0].dir,
		log:  filepath.Join(c.nodes[0].dir, "cluster-create.log"),
	}
	if err := create.run(ctx); err != nil {
		t.Fatal(err)
		return nil, nil, false
	}
	for _, n := range c.nodes {
		if err := n.p.waitReady(60*time.Second, func(ctx context.Context) error {
			return clusterReady(ctx, n.addr, masters)
		}); err != nil {
			t.Fatalf("testserver: Redis Cluster node %s: %v", n.addr, err)
			return nil, nil, false
		}
	}
	return c, c.addrs, true
}

// clusterReady reports whether the node at addr sees a healthy cluster of n nodes.
func clusterReady(ctx context.Context, addr string, n int) error {
	reply, err := redisDo(ctx, addr, "CLUSTER", "INFO")
	if err != nil {
		return err
	}
	if !strings.Contains(reply, "cluster_state:ok") ||
		!strings.Contains(reply, "cluster_known_nodes:"+strconv.Itoa(n)+"\r\n") {
		return fmt.Errorf("CLUSTER INFO: %q", reply)
	}
	return nil
}

// Addrs returns the masters' addresses, "127.0.0.1:port", for redis.ClusterOptions.Addrs.
func (c *RedisClusterServer) Addrs() []string { return append([]string(nil), c.addrs...) }

// Nodes returns the masters, in the order of Addrs, for tests that stop, kill or pause one.
// A node started again after Stop or Kill rejoins the cluster with its slots, from its
// nodes.conf.
func (c *RedisClusterServer) Nodes() []*RedisServer { return append([]*RedisServer(nil), c.nodes...) }

// redisDo sends one command to the Redis server at addr on a new connection and returns its
// reply as a string: the text of a simple string, integer or bulk string ("" for nil). An error
// reply is returned as an error.
func redisDo(ctx context.Context, addr string, args ...string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}
