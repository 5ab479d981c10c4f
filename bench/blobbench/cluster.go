package blobbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/bench/internal/proc"
	"github.com/zrpcio/zrpc/bench/internal/zrpcd"
	"github.com/zrpcio/zrpc/client"
)

// agent is one zrpcd process of a cluster.
type agent struct {
	name, dir            string
	grpcAddr, gossipAddr string
	httpPort             int
	proc                 *proc.Process
	killed               bool
}

// cluster is n agents on loopback that bootstrapped together, each with
// its own data dir and ports.
type cluster struct{ agents []*agent }

// startCluster starts n agents in dir with blockSize blocks (0: the
// default) and waits until every one is alive in gossip and in Raft and a
// leader is known. Ports are picked free just before the start, so another
// process may take one first: the start is then tried once more.
func startCluster(ctx context.Context, bin, dir string, n, blockSize int) (*cluster, error) {
	var err error
	for attempt := 1; attempt <= 2; attempt++ {
		var c *cluster
		c, err = startClusterOnce(ctx, bin, filepath.Join(dir, "cluster-"+strconv.Itoa(attempt)), n, blockSize)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// defaultVoters is zrpcd's --voters default: so many agents bootstrap
// the cluster together, and the others join it as non-voters, as a
// cluster deployed with the defaults does.
const defaultVoters = 3

func startClusterOnce(ctx context.Context, bin, dir string, n, blockSize int) (*cluster, error) {
	ports, err := proc.FreePorts(4 * n)
	if err != nil {
		return nil, err
	}
	c := &cluster{}
	for i := range n {
		a := &agent{name: "z" + strconv.Itoa(i+1), dir: filepath.Join(dir, "z"+strconv.Itoa(i+1)), httpPort: ports[4*i+3]}
		a.grpcAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[4*i]))
		a.gossipAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[4*i+2]))
		c.agents = append(c.agents, a)
	}
	founders := min(n, defaultVoters)
	for i := range n {
		if i == founders {
			// The founders must have formed the cluster before the others
			// join it, or those wait out a join backoff.
			if err := c.waitHTTPReady(ctx, c.agents[:founders]); err != nil {
				c.remove()
				return nil, err
			}
		}
		if err := c.launch(bin, i, founders, ports[4*i+1], blockSize); err != nil {
			c.remove()
			return nil, err
		}
	}
	if err := c.waitReady(ctx); err != nil {
		c.remove()
		return nil, err
	}
	return c, nil
}

// launch starts agent i: one of the founders joins the other founders and
// bootstraps with them; a later agent joins the founders.
func (c *cluster) launch(bin string, i, founders, raftPort, blockSize int) error {
	a := c.agents[i]
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return err
	}
	args := []string{"agent", "join"}
	for j, o := range c.agents[:founders] {
		if j != i {
			args = append(args, o.gossipAddr)
		}
	}
	if i < founders {
		args = append(args, "--bootstrap-expect", strconv.Itoa(founders))
	}
	args = append(args, "--name", a.name, "--data-dir", filepath.Join(a.dir, "data"),
		"--bind", "127.0.0.1", "--http-bind", "127.0.0.1",
		"--grpc-port", portOf(a.grpcAddr), "--raft-port", strconv.Itoa(raftPort),
		"--gossip-port", portOf(a.gossipAddr), "--http-port", strconv.Itoa(a.httpPort),
		"--dns-port", "0", "--log-level", "warn")
	if blockSize > 0 {
		args = append(args, "--blob-block-size", strconv.Itoa(blockSize))
	}
	p, err := proc.Start(a.dir, "zrpcd", bin, args...)
	if err != nil {
		return err
	}
	a.proc = p
	return nil
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// waitReady waits until every agent answers /readyz and the first sees
// all of them alive and in Raft, with a leader.
func (c *cluster) waitReady(ctx context.Context) error {
	if err := c.waitHTTPReady(ctx, c.agents); err != nil {
		return err
	}
	cl, err := client.New(client.Config{Endpoints: []string{c.agents[0].grpcAddr}})
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, zrpcd.ReadyTimeout)
	defer cancel()
	var last string
	for {
		members, merr := cl.Members(ctx)
		peers, perr := cl.Peers(ctx)
		alive := 0
		for _, m := range members {
			if m.GetStatus() == "alive" {
				alive++
			}
		}
		leader := slices.ContainsFunc(peers, (*zrpcpb.Peer).GetLeader)
		if merr == nil && perr == nil && alive == len(c.agents) && len(peers) == len(c.agents) && leader {
			return nil
		}
		last = fmt.Sprintf("%d of %d agents alive, %d in Raft, leader known %v (%v)", alive, len(c.agents), len(peers), leader, errors.Join(merr, perr))
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready: %s: %w", last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitHTTPReady waits until each of agents answers /readyz: it knows a
// leader.
func (c *cluster) waitHTTPReady(ctx context.Context, agents []*agent) error {
	for _, a := range agents {
		url := fmt.Sprintf("http://127.0.0.1:%d/readyz", a.httpPort)
		if err := proc.WaitHTTP(ctx, a.proc, url, zrpcd.ReadyTimeout); err != nil {
			return fmt.Errorf("zrpcd %s: %w\n%s", a.name, err, a.proc.Tail())
		}
	}
	return nil
}

// procs returns the processes of the agents not killed.
func (c *cluster) procs() []*proc.Process {
	var out []*proc.Process
	for _, a := range c.agents {
		if !a.killed {
			out = append(out, a.proc)
		}
	}
	return out
}

// killParity kills m agents with SIGKILL: never the one zrpcctl talks to
// (the first) nor the leader, non-voters first so that Raft keeps its
// quorum. It returns their names.
func (c *cluster) killParity(ctx context.Context, m int) ([]string, error) {
	cl, err := client.New(client.Config{Endpoints: []string{c.agents[0].grpcAddr}})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	peers, err := cl.Peers(pctx)
	if err != nil {
		return nil, fmt.Errorf("raft peers: %w", err)
	}
	names := make([]string, len(c.agents))
	for i, a := range c.agents {
		names[i] = a.name
	}
	victims, err := chooseVictims(names, names[0], peers, m)
	if err != nil {
		return nil, err
	}
	for _, a := range c.agents {
		if slices.Contains(victims, a.name) {
			a.killed = true
			if err := a.proc.Kill(); err != nil {
				return nil, err
			}
		}
	}
	return victims, nil
}

// chooseVictims picks m of names to kill: not entry, not the leader,
// non-voters before voters, in the order of names.
func chooseVictims(names []string, entry string, peers []*zrpcpb.Peer, m int) ([]string, error) {
	suffrage := map[string]string{}
	leader := ""
	for _, p := range peers {
		suffrage[p.GetId()] = p.GetSuffrage()
		if p.GetLeader() {
			leader = p.GetId()
		}
	}
	var nonvoters, voters []string
	for _, n := range names {
		switch {
		case n == entry || n == leader:
		case strings.EqualFold(suffrage[n], "nonvoter"):
			nonvoters = append(nonvoters, n)
		default:
			voters = append(voters, n)
		}
	}
	candidates := append(nonvoters, voters...)
	if m < 1 || m > len(candidates) {
		return nil, fmt.Errorf("kill %d agents: %d of %d are neither the client's agent nor the leader (want 1 to %d parity shards)", m, len(candidates), len(names), len(candidates))
	}
	return candidates[:m], nil
}

// stop stops the agents not killed.
func (c *cluster) stop() error {
	var errs []error
	for _, a := range c.agents {
		if a.proc != nil && !a.killed {
			errs = append(errs, a.proc.Stop())
		}
	}
	return errors.Join(errs...)
}

// remove stops the agents and removes their data, keeping their logs.
func (c *cluster) remove() {
	c.stop()
	for _, a := range c.agents {
		os.RemoveAll(filepath.Join(a.dir, "data"))
	}
}
