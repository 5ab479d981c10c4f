package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/bench/internal/proc"
	"github.com/zrpcio/zrpc/client"
)

// registrationTTL is the TTL of every registration (zrpc instance, etcd
// lease): long enough that none expires while it is measured, also while
// a million are loaded. Nothing renews them: an etcd lease that expired
// would take all of its writer's keys with it.
const registrationTTL = time.Hour

// zrpcSystem runs zrpcd agents with default settings, except extra flags
// (the scale phase's raised quotas).
type zrpcSystem struct {
	bin   string
	extra []string
}

func (zrpcSystem) name() string { return Zrpc }

type zrpcMember struct {
	memberProc
	grpcPort, raftPort, gossipPort, http int
}

func (m *zrpcMember) grpcAddr() string {
	return net.JoinHostPort(m.ip, strconv.Itoa(m.grpcPort))
}
func (m *zrpcMember) gossipAddr() string {
	return net.JoinHostPort(m.ip, strconv.Itoa(m.gossipPort))
}

type zrpcCluster struct {
	memberProcs
	sys    zrpcSystem
	dir    string
	agents []*zrpcMember
}

func (s zrpcSystem) start(ctx context.Context, nw network, dir string, members int) (cluster, error) {
	ports, err := proc.FreePorts(4 * members)
	if err != nil {
		return nil, err
	}
	c := &zrpcCluster{sys: s, dir: dir}
	c.init(nw)
	c.launchMember, c.waitMember = c.launch, c.waitServing
	for i := range members {
		name := "z" + strconv.Itoa(i+1)
		m := &zrpcMember{memberProc: memberProc{name: name, dir: filepath.Join(dir, name)}}
		m.grpcPort, m.raftPort, m.gossipPort, m.http = ports[4*i], ports[4*i+1], ports[4*i+2], ports[4*i+3]
		if err := c.add(&m.memberProc); err != nil {
			return nil, err
		}
		c.agents = append(c.agents, m)
	}
	if err := c.startAll(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

// launch starts agent i; with several agents each joins the others and
// they bootstrap together.
func (c *zrpcCluster) launch(i int) error {
	m := c.agents[i]
	args := []string{"agent"}
	if len(c.agents) > 1 {
		args = append(args, "join")
		for j, o := range c.agents {
			if j != i {
				args = append(args, o.gossipAddr())
			}
		}
		args = append(args, "--bootstrap-expect", strconv.Itoa(len(c.agents)))
	}
	args = append(args, "--name", m.name, "--data-dir", filepath.Join(m.dir, "data"),
		"--bind", m.ip, "--http-bind", m.ip,
		"--grpc-port", strconv.Itoa(m.grpcPort), "--raft-port", strconv.Itoa(m.raftPort),
		"--gossip-port", strconv.Itoa(m.gossipPort), "--http-port", strconv.Itoa(m.http),
		"--dns-port", "0",
		"--log-level", "warn")
	args = append(args, c.sys.extra...)
	return c.run(i, "zrpcd", c.sys.bin, args)
}

// waitServing waits until agent i knows a leader (/readyz).
func (c *zrpcCluster) waitServing(ctx context.Context, i int) error {
	m := c.agents[i]
	url := fmt.Sprintf("http://%s/readyz", net.JoinHostPort(m.ip, strconv.Itoa(m.http)))
	if err := proc.WaitHTTPWith(ctx, c.memberProcs.http, m.proc, url, readyTimeout); err != nil {
		return fmt.Errorf("zrpcd %s: %w\n%s", m.name, err, m.proc.Tail())
	}
	return nil
}

func (c *zrpcCluster) leader(ctx context.Context) (int, error) {
	return c.leaderBy(ctx, errors.New("zrpc: no agent says it leads"), func(ctx context.Context, i int) (bool, error) {
		cl, err := client.New(client.Config{Endpoints: []string{c.agents[i].grpcAddr()}, Dialer: c.net.dial})
		if err != nil {
			return false, err
		}
		defer cl.Close()
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st, err := cl.Status(sctx)
		return err == nil && st.GetRaftState() == "Leader", nil
	})
}

func (c *zrpcCluster) endpoints(members []int) []string {
	var eps []string
	for _, i := range members {
		eps = append(eps, c.agents[i].grpcAddr())
	}
	return eps
}

func (c *zrpcCluster) newWriter(_ context.Context, members ...int) (writer, error) {
	cl, err := client.New(client.Config{Endpoints: c.endpoints(members), Dialer: c.net.dial})
	if err != nil {
		return nil, err
	}
	return zrpcWriter{c: cl, addr: c.agents[members[0]].grpcAddr(), dial: c.net.dial}, nil
}

type zrpcWriter struct {
	c    *client.Client
	addr string // the first endpoint of c
	dial func(context.Context, string) (net.Conn, error)
}

func (w zrpcWriter) put(ctx context.Context, group, key string, stamp int64) error {
	_, _, err := w.c.Register(ctx, zrpcInstance(group, key, stamp))
	return err
}

func (w zrpcWriter) read(ctx context.Context, group string) (int, error) {
	insts, _, err := w.c.Get(ctx, group, client.WithConsistency(zrpcpb.Consistency_CONSISTENT))
	return len(insts), err
}

// readAll reads the snapshot of a watch of every service over a stream
// of its own, to see when its first page arrives (client.WatchStream
// hands a snapshot over only once its last page has).
func (w zrpcWriter) readAll(ctx context.Context) (int, time.Duration, error) {
	conn, err := grpc.NewClient(w.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(w.dial))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := time.Now()
	ws, err := zrpcpb.NewRegistryClient(conn).Watch(ctx, &zrpcpb.WatchRequest{})
	if err != nil {
		return 0, 0, err
	}
	var (
		n     int
		first time.Duration
	)
	for page := 0; ; page++ {
		resp, err := ws.Recv()
		if err != nil {
			return 0, 0, fmt.Errorf("page %d of the snapshot: %w", page, err)
		}
		if page == 0 {
			if !resp.GetSnapshot() {
				return 0, 0, errors.New("watch of every service began without a snapshot")
			}
			first = time.Since(t)
		}
		n += len(resp.GetEvents())
		if !resp.GetMore() {
			return n, first, nil
		}
	}
}

func (w zrpcWriter) close() error { return w.c.Close() }

// zrpcInstance is a ~200-byte TTL instance (address, zone, version, two
// tags, three metadata keys, the stamp among them).
func zrpcInstance(service, id string, stamp int64) *zrpcpb.Instance {
	return &zrpcpb.Instance{
		Service: service, Id: id, Address: "10.1.2.3:9001",
		Zone: "zone-a", Version: "v1.2.3", Tags: []string{"primary", "canary"},
		Metadata: map[string]string{"region": "eu-west", "owner": "team-users", "stamp": strconv.FormatInt(stamp, 10)},
		Check:    &zrpcpb.Check{Ttl: durationpb.New(registrationTTL)},
	}
}

func (c *zrpcCluster) newWatchConn(_ context.Context, member int) (watchConn, error) {
	cl, err := client.New(client.Config{Endpoints: c.endpoints([]int{member}), Dialer: c.net.dial})
	if err != nil {
		return nil, err
	}
	return &zrpcWatchConn{c: cl}, nil
}

type zrpcWatchConn struct {
	c  *client.Client
	wg sync.WaitGroup
}

// watch opens a watch from the current state: the agent sends a snapshot
// first, which establishes the stream; events after it are delivered.
func (w *zrpcWatchConn) watch(ctx context.Context, group string, deliver func(int64)) error {
	ws, err := w.c.Watch(ctx, group, 0)
	if err != nil {
		return err
	}
	// The first response (the snapshot) must come within readyTimeout.
	timer := time.AfterFunc(readyTimeout, func() { ws.Close() })
	first, err := ws.Recv()
	timer.Stop()
	if err != nil {
		ws.Close()
		return fmt.Errorf("watch %s: %w", group, err)
	}
	w.wg.Go(func() {
		defer ws.Close()
		resp := first
		for {
			if !resp.GetSnapshot() {
				for _, ev := range resp.GetEvents() {
					if ev.GetType() != zrpcpb.Event_PUT {
						continue
					}
					if s, err := strconv.ParseInt(ev.GetInstance().GetMetadata()["stamp"], 10, 64); err == nil {
						deliver(s)
					}
				}
			}
			if resp, err = ws.Recv(); err != nil {
				return
			}
		}
	})
	return nil
}

func (w *zrpcWatchConn) close() error {
	err := w.c.Close()
	w.wg.Wait()
	return err
}

// probeWrite writes through member 0 until a write succeeds or
// readyTimeout passes: the cluster has a leader that commits.
func probeWrite(ctx context.Context, c cluster) error { return probeWriteThrough(ctx, c, 0) }

// probeWriteThrough is probeWrite through member i.
func probeWriteThrough(ctx context.Context, c cluster, i int) error {
	w, err := c.newWriter(ctx, i)
	if err != nil {
		return err
	}
	defer w.close()
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		err := w.put(wctx, "probe.rpc", "probe", stampNow())
		wcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("first write: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *zrpcCluster) addr(i int) string { return c.agents[i].grpcAddr() }
func (c *zrpcCluster) metricsURL(i int) string {
	return fmt.Sprintf("http://%s/metrics", net.JoinHostPort(c.agents[i].ip, strconv.Itoa(c.agents[i].http)))
}
