package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

// memberProc is one member's process and the directory it runs in (its
// data under dir/data, its logs beside), and the address it binds.
type memberProc struct {
	name string
	dir  string
	ip   string
	proc *proc.Process
}

// memberProcs is what a cluster of either system does with its members'
// processes; the system says how member i starts (launchMember) and when
// it serves (waitMember).
type memberProcs struct {
	net          network // where the members run
	http         *http.Client
	procs        []*memberProc
	starts       int // process starts, to name each one's log
	launchMember func(i int) error
	waitMember   func(ctx context.Context, i int) error
}

// init sets the network the members run on.
func (c *memberProcs) init(nw network) {
	c.net, c.http = nw, httpClient(nw, time.Second)
}

// add makes the directory of a new member, the next on c's network, sets
// its address and keeps it.
func (c *memberProcs) add(m *memberProc) error {
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		return err
	}
	m.ip = c.net.ip(len(c.procs))
	c.procs = append(c.procs, m)
	return nil
}

// run starts member i's process, bin with args on its host, its log named
// prefix-N.
func (c *memberProcs) run(i int, prefix, bin string, args []string) error {
	c.starts++
	bin, args = c.net.command(i, bin, args)
	p, err := proc.Start(c.procs[i].dir, fmt.Sprintf("%s-%d", prefix, c.starts), bin, args...)
	if err != nil {
		return err
	}
	c.procs[i].proc = p
	return nil
}

// startAll launches every member, waits until each serves and a write to
// cl succeeds; on failure it stops what it started.
func (c *memberProcs) startAll(ctx context.Context, cl cluster) error {
	err := func() error {
		for i := range c.procs {
			if err := c.launchMember(i); err != nil {
				return err
			}
		}
		for i := range c.procs {
			if err := c.waitMember(ctx, i); err != nil {
				return err
			}
		}
		return probeWrite(ctx, cl)
	}()
	if err != nil {
		c.close()
	}
	return err
}

func (c *memberProcs) members() int                { return len(c.procs) }
func (c *memberProcs) process(i int) *proc.Process { return c.procs[i].proc }
func (c *memberProcs) kill(i int) error            { return c.procs[i].proc.Kill() }
func (c *memberProcs) terminate(i int) error       { return c.procs[i].proc.Stop() }

func (c *memberProcs) restart(ctx context.Context, i int) error {
	if err := c.launchMember(i); err != nil {
		return err
	}
	return c.waitMember(ctx, i)
}

// close stops every member and removes their data (their logs stay).
func (c *memberProcs) close() error {
	var errs []error
	for _, m := range c.procs {
		if m.proc != nil {
			errs = append(errs, m.proc.Stop())
		}
	}
	for _, m := range c.procs {
		errs = append(errs, os.RemoveAll(filepath.Join(m.dir, "data")))
	}
	return errors.Join(errs...)
}

// leaderBy returns the first member whose process runs and that leads
// by leads' answer, or noLeader.
func (c *memberProcs) leaderBy(ctx context.Context, noLeader error, leads func(ctx context.Context, i int) (bool, error)) (int, error) {
	for i, m := range c.procs {
		if done, _ := m.proc.Exited(); done {
			continue
		}
		if ok, err := leads(ctx, i); err != nil {
			return 0, err
		} else if ok {
			return i, nil
		}
	}
	return 0, noLeader
}
