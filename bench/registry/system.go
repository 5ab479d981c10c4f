package registry

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/zrpcio/zrpc/bench/internal/proc"
)

// System names.
const (
	Zrpc = "zrpc"
	Etcd = "etcd"
)

// readyTimeout bounds a member's start (or restart) until it serves.
const readyTimeout = 60 * time.Second

// system starts clusters of one registry: zrpcd agents or etcd members.
type system interface {
	name() string
	// start starts members processes on nw with fresh data dirs under
	// dir and returns once every member serves and a write has
	// succeeded.
	start(ctx context.Context, nw network, dir string, members int) (cluster, error)
}

// cluster is one running cluster of a system. Every method may be called
// from one goroutine at a time, except the writers' and watchers'.
type cluster interface {
	members() int
	process(i int) *proc.Process
	// leader returns the index of the member that leads.
	leader(ctx context.Context) (int, error)
	// kill kills member i with SIGKILL; restart starts it again on its data
	// dir and ports and returns once it serves.
	kill(i int) error
	restart(ctx context.Context, i int) error
	// launch starts member i again on its data dir and ports without
	// waiting; addr is the address its clients dial.
	launch(i int) error
	addr(i int) string
	// metricsURL is member i's Prometheus endpoint.
	metricsURL(i int) string
	// terminate stops member i with SIGTERM and waits for it to exit.
	terminate(i int) error
	// newWriter connects one client to the members given (one connection
	// each; the client fails over between them in that order).
	newWriter(ctx context.Context, members ...int) (writer, error)
	// newWatchConn connects one client (one connection) to member i.
	newWatchConn(ctx context.Context, member int) (watchConn, error)
	// close stops every member and removes their data dirs (their logs
	// stay, in the run's directory).
	close() error
}

// writer writes registrations: a zrpc TTL instance or an etcd key with a
// lease, ~200 bytes either way.
type writer interface {
	// put writes key in group (a zrpc service, an etcd key prefix) with
	// the value carrying stamp (stampNow), and returns once the
	// write is acknowledged.
	put(ctx context.Context, group, key string, stamp int64) error
	// read reads group with the system's linearizable read (zrpc's
	// CONSISTENT Get, etcd's default Get) and returns how many entries it
	// holds.
	read(ctx context.Context, group string) (int, error)
	// readAll lists every entry of the registry the way a client that
	// follows all of it starts (zrpc: the snapshot of a watch of every
	// service, in pages; etcd: a Get of the whole prefix, one answer) and
	// returns how many, and how long after the call the first of them
	// arrived (etcd: the whole answer).
	readAll(ctx context.Context) (n int, first time.Duration, err error)
	close() error
}

// watchConn opens watches over one client connection.
type watchConn interface {
	// watch watches group and calls deliver with the stamp of every write
	// it sees, from a goroutine the watchConn owns, until ctx ends or
	// close. It returns once the watch is established.
	watch(ctx context.Context, group string, deliver func(stamp int64)) error
	// close ends every watch and waits for their goroutines.
	close() error
}

// instanceValue returns the ~200 bytes of a registration's value: the
// stamp first, then what an instance carries (address, zone, version,
// tags, metadata), padded to 200 bytes.
func instanceValue(key string, stamp int64) string {
	v := fmt.Sprintf(`{"stamp":%d,"id":%q,"address":"10.1.2.3:9001","zone":"zone-a","version":"v1.2.3","tags":["primary","canary"],"meta":{"region":"eu-west","owner":"team-users"}}`, stamp, key)
	if len(v) < 200 {
		v += strings.Repeat(" ", 200-len(v))
	}
	return v
}

// stampOf reads the stamp back out of instanceValue's bytes.
func stampOf(v []byte) (int64, bool) {
	const prefix = `{"stamp":`
	if len(v) < len(prefix) || string(v[:len(prefix)]) != prefix {
		return 0, false
	}
	var n int64
	i := len(prefix)
	for ; i < len(v) && v[i] >= '0' && v[i] <= '9'; i++ {
		n = n*10 + int64(v[i]-'0')
	}
	return n, i > len(prefix)
}
