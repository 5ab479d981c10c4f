package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

// etcdPrefix is where the benchmark's keys live: <prefix><group>/<key>.
const etcdPrefix = "/zrpc-bench/"

// etcdSystem runs etcd members with default settings, except extra flags.
type etcdSystem struct {
	bin   string
	extra []string
}

func (etcdSystem) name() string { return Etcd }

type etcdMember struct {
	memberProc
	clientPort, peerPort int
}

func (m *etcdMember) clientAddr() string {
	return net.JoinHostPort(m.ip, strconv.Itoa(m.clientPort))
}

type etcdCluster struct {
	memberProcs
	sys     etcdSystem
	dir     string
	initial string // --initial-cluster
	nodes   []*etcdMember
}

func (s etcdSystem) start(ctx context.Context, nw network, dir string, members int) (cluster, error) {
	ports, err := proc.FreePorts(2 * members)
	if err != nil {
		return nil, err
	}
	c := &etcdCluster{sys: s, dir: dir}
	c.init(nw)
	c.launchMember, c.waitMember = c.launch, c.waitServing
	var initial []string
	for i := range members {
		name := "e" + strconv.Itoa(i+1)
		m := &etcdMember{memberProc: memberProc{name: name, dir: filepath.Join(dir, name)},
			clientPort: ports[2*i], peerPort: ports[2*i+1]}
		if err := c.add(&m.memberProc); err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, m)
		initial = append(initial, fmt.Sprintf("%s=http://%s", m.name, net.JoinHostPort(m.ip, strconv.Itoa(m.peerPort))))
	}
	c.initial = strings.Join(initial, ",")
	if err := c.startAll(ctx, c); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *etcdCluster) launch(i int) error {
	m := c.nodes[i]
	curl := "http://" + m.clientAddr()
	purl := "http://" + net.JoinHostPort(m.ip, strconv.Itoa(m.peerPort))
	args := []string{"--name", m.name, "--data-dir", filepath.Join(m.dir, "data"),
		"--listen-client-urls", curl, "--advertise-client-urls", curl,
		"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
		"--initial-cluster", c.initial, "--initial-cluster-state", "new",
		"--initial-cluster-token", "zrpc-bench", "--logger", "zap", "--log-level", "warn"}
	args = append(args, c.sys.extra...)
	return c.run(i, "etcd", c.sys.bin, args)
}

// waitServing waits until member i reports itself healthy (/health: it
// has a leader).
func (c *etcdCluster) waitServing(ctx context.Context, i int) error {
	m := c.nodes[i]
	url := "http://" + m.clientAddr() + "/health"
	if err := proc.WaitHTTPWith(ctx, c.memberProcs.http, m.proc, url, readyTimeout); err != nil {
		return fmt.Errorf("etcd %s: %w\n%s", m.name, err, m.proc.Tail())
	}
	return nil
}

// leader asks each member's maintenance Status which member leads.
func (c *etcdCluster) leader(ctx context.Context) (int, error) {
	return c.leaderBy(ctx, errors.New("etcd: no member says it leads"), func(ctx context.Context, i int) (bool, error) {
		m := c.nodes[i]
		cl, err := newEtcdClient(c.net, m.clientAddr())
		if err != nil {
			return false, err
		}
		defer cl.Close()
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st, err := cl.Status(sctx, m.clientAddr())
		return err == nil && st.Leader != 0 && st.Leader == st.Header.GetMemberId(), nil
	})
}

func newEtcdClient(nw network, endpoints ...string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(nw.dial)}})
}

func (c *etcdCluster) endpoints(members []int) []string {
	var eps []string
	for _, i := range members {
		eps = append(eps, c.nodes[i].clientAddr())
	}
	return eps
}

func (c *etcdCluster) newWriter(_ context.Context, members ...int) (writer, error) {
	cl, err := newEtcdClient(c.net, c.endpoints(members)...)
	if err != nil {
		return nil, err
	}
	return &etcdWriter{c: cl}, nil
}

// etcdWriter puts keys attached to its one lease, granted on the first
// put, as a registering process holds one lease for its instances.
type etcdWriter struct {
	c     *clientv3.Client
	lease clientv3.LeaseID
}

func (w *etcdWriter) put(ctx context.Context, group, key string, stamp int64) error {
	if w.lease == 0 {
		l, err := w.c.Grant(ctx, int64(registrationTTL/time.Second))
		if err != nil {
			return fmt.Errorf("grant lease: %w", err)
		}
		w.lease = l.ID
	}
	_, err := w.c.Put(ctx, etcdPrefix+group+"/"+key, instanceValue(key, stamp), clientv3.WithLease(w.lease))
	return err
}

func (w *etcdWriter) read(ctx context.Context, group string) (int, error) {
	resp, err := w.c.Get(ctx, etcdPrefix+group+"/", clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	return len(resp.Kvs), nil
}

func (w *etcdWriter) readAll(ctx context.Context) (int, time.Duration, error) {
	t := time.Now()
	resp, err := w.c.Get(ctx, etcdPrefix, clientv3.WithPrefix())
	if err != nil {
		return 0, 0, err
	}
	return len(resp.Kvs), time.Since(t), nil
}

func (w *etcdWriter) close() error { return w.c.Close() }

func (c *etcdCluster) newWatchConn(_ context.Context, member int) (watchConn, error) {
	cl, err := newEtcdClient(c.net, c.endpoints([]int{member})...)
	if err != nil {
		return nil, err
	}
	return &etcdWatchConn{c: cl}, nil
}

type etcdWatchConn struct {
	c  *clientv3.Client
	wg sync.WaitGroup
}

// watch opens a watch of the group's prefix and waits for etcd to confirm
// it was created.
func (w *etcdWatchConn) watch(ctx context.Context, group string, deliver func(int64)) error {
	ch := w.c.Watch(ctx, etcdPrefix+group+"/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case first, ok := <-ch:
		if !ok || first.Err() != nil || !first.Created {
			return fmt.Errorf("watch %s: not created (%v)", group, first.Err())
		}
	case <-timer.C:
		return fmt.Errorf("watch %s: not created within %s", group, readyTimeout)
	}
	w.wg.Go(func() {
		for resp := range ch {
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				if s, ok := stampOf(ev.Kv.Value); ok {
					deliver(s)
				}
			}
		}
	})
	return nil
}

func (w *etcdWatchConn) close() error {
	err := w.c.Close()
	w.wg.Wait()
	return err
}

func (c *etcdCluster) addr(i int) string { return c.nodes[i].clientAddr() }
func (c *etcdCluster) metricsURL(i int) string {
	return "http://" + c.nodes[i].clientAddr() + "/metrics"
}
