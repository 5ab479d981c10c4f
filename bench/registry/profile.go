package registry

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// profiled is a cluster whose members serve Go's pprof over HTTP (zrpcd).
type profiled interface {
	// pprofURL is member i's base URL of /debug/pprof.
	pprofURL(i int) string
}

func (c *zrpcCluster) pprofURL(i int) string {
	return fmt.Sprintf("http://%s/debug/pprof", net.JoinHostPort(c.agents[i].ip, strconv.Itoa(c.agents[i].http)))
}

// profileRound takes a CPU profile of every member of c over d while a
// round runs, when Config.Profile names a directory and c serves pprof.
// Each lands in Profile/<name>-<member>-<role>.pprof, role leader or
// follower (leader is the member that led when the round started, -1 on
// one node). wait blocks until every profile is written; it returns the
// errors of all.
func (r *runner) profileRound(ctx context.Context, c cluster, leader int, d time.Duration, name string) (wait func() error) {
	p, ok := c.(profiled)
	if r.cfg.Profile == "" || !ok {
		return func() error { return nil }
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	secs := max(1, int(d/time.Second))
	for i := range c.members() {
		role := "follower"
		if i == leader || c.members() == 1 {
			role = "leader"
		}
		file := filepath.Join(r.cfg.Profile, fmt.Sprintf("%s-%d-%s.pprof", name, i+1, role))
		url := p.pprofURL(i) + "/profile?seconds=" + strconv.Itoa(secs)
		wg.Go(func() {
			if err := fetchTo(ctx, url, file); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	return func() error {
		wg.Wait()
		return errors.Join(errs...)
	}
}

// fetchTo writes the body of a GET of url to file.
func fetchTo(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile %s: %w", url, err)
	}
	return f.Close()
}

// mallocs returns the heap allocations all of c's members have made
// since they started (Go's go_memstats_mallocs_total, which zrpcd and
// etcd both export); ok is false when a member did not say.
func mallocs(ctx context.Context, c cluster) (n float64, ok bool) {
	for i := range c.members() {
		v, err := scrapeCounter(ctx, c.metricsURL(i), "go_memstats_mallocs_total")
		if err != nil {
			return 0, false
		}
		n += v
	}
	return n, true
}

// scrapeCounter reads the value of the metric name (with its labels as
// the exposition writes them: name{label="value"}) from the Prometheus
// text exposition at url.
func scrapeCounter(ctx context.Context, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("scrape %s: %w", url, err)
	}
	return 0, fmt.Errorf("scrape %s: no %s", url, name)
}

// leaderCommitter is a cluster whose leader reports how long its writes
// take from proposal to applied (zrpcd's
// zrpc_raft_apply_duration_seconds): the share of a write's latency the
// Raft commit takes, apart from the hops to and from the leader.
type leaderCommitter interface {
	// commitSeconds returns the sum and count of member i's commits.
	commitSeconds(ctx context.Context, i int) (sum, count float64, err error)
}

func (c *zrpcCluster) commitSeconds(ctx context.Context, i int) (sum, count float64, err error) {
	const name = "zrpc_raft_apply_duration_seconds"
	if sum, err = scrapeCounter(ctx, c.metricsURL(i), name+`_sum{result="ok"}`); err != nil {
		return 0, 0, err
	}
	count, err = scrapeCounter(ctx, c.metricsURL(i), name+`_count{result="ok"}`)
	return sum, count, err
}
