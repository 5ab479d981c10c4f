package grpcapi

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/gossip"
)

// The Keyring service rotates the cluster's gossip encryption key: each
// call is applied on this agent and, through the agent-to-agent
// KeyringPeer service, on every alive member, in parallel, and answered
// with one result per agent. Use and Remove first list every alive
// agent's keys and change nothing while the step would cut one off
// (checkStep). KeyringPeer applies a call on its own agent only.

// DefaultKeyringPeerTimeout bounds a peer's answer when
// KeyringConfig.PeerTimeout is zero.
const DefaultKeyringPeerTimeout = 5 * time.Second

// LocalKeyring is this agent's gossip keyring (*gossip.Gossip implements
// it). Keys are base64. Its methods are called from handlers, concurrently.
type LocalKeyring interface {
	// Keys returns the primary key and all installed keys (primary
	// first); both are empty when gossip is not encrypted.
	Keys() (primary string, all []string)
	InstallKey(key string) error
	UseKey(key string) error
	RemoveKey(key string) error
}

// KeyringCluster is the cluster as the Keyring service fans a call out
// over it.
type KeyringCluster interface {
	// Members are the agents gossip knows, this one included; the call
	// goes to the alive ones.
	Members() []gossip.Member
	// KeyringPeer returns a client of the KeyringPeer service of the agent
	// serving gRPC at grpcAddr, over a connection that proves the caller is
	// an agent of this cluster.
	KeyringPeer(grpcAddr string) (pb.KeyringPeerClient, error)
}

// KeyringConfig is what the Keyring and KeyringPeer services need of
// their agent.
type KeyringConfig struct {
	// Agent is this agent's name.
	Agent   string
	Local   LocalKeyring
	Cluster KeyringCluster
	// PeerTimeout bounds each peer's answer; zero means
	// DefaultKeyringPeerTimeout. A caller's deadline shortens it (see
	// peerTimeout).
	PeerTimeout time.Duration
	Logger      *slog.Logger
}

// Keyring serves the Keyring API on one agent.
type Keyring struct {
	pb.UnimplementedKeyringServer
	cfg KeyringConfig
	log *slog.Logger
}

// NewKeyring returns the Keyring service of an agent. Peer returns the
// KeyringPeer service the agent serves beside it.
func NewKeyring(cfg KeyringConfig) *Keyring {
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = DefaultKeyringPeerTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Keyring{cfg: cfg, log: log.With("component", "keyring")}
}

// keyringOp is one of the four keyring operations.
type keyringOp string

const (
	opList    keyringOp = "list"
	opInstall keyringOp = "install"
	opUse     keyringOp = "use"
	opRemove  keyringOp = "remove"
)

// errKeyringNotEncrypted is List's answer on an agent whose gossip is not
// encrypted.
var errKeyringNotEncrypted = errors.New("gossip is not encrypted on this agent")

// applyLocal runs op on this agent's keyring.
func (s *Keyring) applyLocal(op keyringOp, key string) *pb.KeyringAgentResult {
	res := &pb.KeyringAgentResult{Agent: s.cfg.Agent}
	var err error
	switch op {
	case opList:
		res.PrimaryKey, res.Keys = s.cfg.Local.Keys()
		if res.PrimaryKey == "" {
			err = errKeyringNotEncrypted
		}
	case opInstall:
		err = s.cfg.Local.InstallKey(key)
	case opUse:
		err = s.cfg.Local.UseKey(key)
	case opRemove:
		err = s.cfg.Local.RemoveKey(key)
	}
	if err != nil {
		res.Error = err.Error()
	} else {
		res.Ok = true
	}
	return res
}

// peerTimeout is how long each peer may take: PeerTimeout, but at most
// three quarters of the time left before the caller's deadline, so that
// the answer still reaches the caller and says which agent did not answer.
func (s *Keyring) peerTimeout(ctx context.Context) time.Duration {
	t := s.cfg.PeerTimeout
	if d, ok := ctx.Deadline(); ok {
		t = min(t, time.Until(d)*3/4)
	}
	return t
}

// callPeer runs op on the agent m through its KeyringPeer service, waiting
// up to timeout.
func (s *Keyring) callPeer(ctx context.Context, op keyringOp, key string, m gossip.Member, timeout time.Duration) *pb.KeyringAgentResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	failed := func(err error) *pb.KeyringAgentResult {
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			err = fmt.Errorf("no answer within %s: %w", timeout.Round(time.Millisecond), err)
		}
		s.log.Warn("keyring call of a peer failed", "op", string(op), "agent", m.Name, "err", err)
		return &pb.KeyringAgentResult{Agent: m.Name, Error: err.Error()}
	}
	c, err := s.cfg.Cluster.KeyringPeer(m.Meta.GRPCAddr)
	if err != nil {
		return failed(err)
	}
	req := &pb.KeyringKeyRequest{Key: key}
	// An agent that is still joining answers Unavailable until it has the
	// cluster's secret; every op is idempotent, so it is asked again.
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		var res *pb.KeyringAgentResult
		switch op {
		case opList:
			res, err = c.List(ctx, &pb.KeyringListRequest{})
		case opInstall:
			res, err = c.Install(ctx, req)
		case opUse:
			res, err = c.Use(ctx, req)
		case opRemove:
			res, err = c.Remove(ctx, req)
		}
		if err == nil {
			res.Agent = m.Name
			return res
		}
		if status.Code(err) != codes.Unavailable {
			return failed(err)
		}
		select {
		case <-ctx.Done():
			return failed(err)
		case <-time.After(wait):
		}
	}
}

// fanOut runs op on this agent and every other alive member in parallel
// and returns their results sorted by agent name. A member gossip sees
// failed is not asked but reported as not reached: it keeps the keys it
// had, and after the others' old key is removed it could not rejoin.
func (s *Keyring) fanOut(ctx context.Context, op keyringOp, key string) *pb.KeyringResponse {
	peers, away := s.members()
	results := s.ask(ctx, op, key, peers)
	for _, m := range away {
		results = append(results, &pb.KeyringAgentResult{Agent: m.Name, Error: notReached(op, m)})
	}
	slices.SortFunc(results, func(a, b *pb.KeyringAgentResult) int { return cmp.Compare(a.Agent, b.Agent) })
	resp := &pb.KeyringResponse{Agents: results}
	if op == opList {
		resp.Keys = countKeys(results)
	}
	return resp
}

// members returns the members other than this agent that gossip sees
// alive (peers, asked) and those it sees neither alive nor left (away,
// not asked).
func (s *Keyring) members() (peers, away []gossip.Member) {
	for _, m := range s.cfg.Cluster.Members() {
		switch {
		case m.Name == s.cfg.Agent:
		case m.Status == gossip.StatusAlive:
			peers = append(peers, m)
		case m.Status != gossip.StatusLeft:
			away = append(away, m)
		}
	}
	return peers, away
}

// ask runs op on this agent and on peers in parallel and returns their
// results, this agent's last.
func (s *Keyring) ask(ctx context.Context, op keyringOp, key string, peers []gossip.Member) []*pb.KeyringAgentResult {
	results := make([]*pb.KeyringAgentResult, len(peers)+1)
	timeout := s.peerTimeout(ctx)
	var wg sync.WaitGroup
	for i, m := range peers {
		wg.Go(func() { results[i] = s.callPeer(ctx, op, key, m, timeout) })
	}
	results[len(peers)] = s.applyLocal(op, key)
	wg.Wait()
	return results
}

// checkStep refuses to make key the primary key (use) while an alive
// agent does not hold it, and to remove key while an alive agent still
// encrypts with it. Either would cut that agent off: it or the others
// could no longer read the other side's gossip, gossip would soon see it
// failed, and no later keyring call would reach it (it would have to be
// restarted with the new key). It asks every alive agent for its keys
// first; one that does not answer blocks the step too, as it may be such
// an agent. Agents gossip does not see alive are not asked (fanOut
// reports them). key is canonical base64, as the agents list keys.
func (s *Keyring) checkStep(ctx context.Context, op keyringOp, key string) error {
	peers, _ := s.members()
	var blocked, unknown []string
	for _, r := range s.ask(ctx, opList, "", peers) {
		switch {
		case !r.Ok:
			unknown = append(unknown, fmt.Sprintf("%s: %s", r.Agent, r.Error))
		case op == opUse && !slices.Contains(r.Keys, key):
			blocked = append(blocked, r.Agent)
		case op == opRemove && r.PrimaryKey == key:
			blocked = append(blocked, r.Agent)
		}
	}
	slices.Sort(blocked)
	slices.Sort(unknown)
	fp := gossip.KeyFingerprint(key)
	switch {
	case len(blocked) > 0 && op == opUse:
		return fmt.Errorf("%w: key %s is not installed on %s, and making it primary on the others would cut them off from gossip; "+
			"nothing was changed: install it first (zrpcctl keyring install), then run use again",
			apierr.ErrFailedPrecondition, fp, strings.Join(blocked, ", "))
	case len(blocked) > 0:
		return fmt.Errorf("%w: key %s is still the primary key of %s (gossip is encrypted with it there), and removing it from the others would cut them off from gossip; "+
			"nothing was changed: make the new key primary first (zrpcctl keyring use), then run remove again",
			apierr.ErrFailedPrecondition, fp, strings.Join(blocked, ", "))
	case len(unknown) > 0:
		return fmt.Errorf("%w: could not list the keys of every alive agent (%s), so key %s could not be checked; "+
			"nothing was changed: run zrpcctl keyring %s again once they answer (an agent that is down is not waited for once gossip sees it failed)",
			apierr.ErrFailedPrecondition, strings.Join(unknown, "; "), fp, op)
	}
	return nil
}

// notReached says why member m, which gossip does not see alive, was not
// asked to run op, and what that means for the rotation.
func notReached(op keyringOp, m gossip.Member) string {
	if op == opList {
		return fmt.Sprintf("not reached: the agent is %s", m.Status)
	}
	return fmt.Sprintf("not reached: the agent is %s and keeps the keys it had; once the old key is removed elsewhere it cannot rejoin. "+
		"When it is back, run install and use again before remove, or start it with the new key (delete its <data-dir>/%s, give --encrypt-file NEW)",
		m.Status, gossip.KeyringFileName)
}

// countKeys counts, for every key the agents listed, how many hold it and
// how many encrypt with it.
func countKeys(results []*pb.KeyringAgentResult) []*pb.KeyringKeyCount {
	counts := map[string]*pb.KeyringKeyCount{}
	for _, r := range results {
		for _, k := range r.Keys {
			c := counts[k]
			if c == nil {
				c = &pb.KeyringKeyCount{Key: k}
				counts[k] = c
			}
			c.Agents++
			if k == r.PrimaryKey {
				c.Primary++
			}
		}
	}
	out := make([]*pb.KeyringKeyCount, 0, len(counts))
	for _, c := range counts {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *pb.KeyringKeyCount) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// validKey checks a request's key before any agent is asked and returns
// it as the agents list keys (canonical base64).
func validKey(key string) (string, error) {
	k, err := gossip.ParseKey(key)
	if err != nil {
		return "", apierr.Invalid("key", "%v", err)
	}
	return base64.StdEncoding.EncodeToString(k), nil
}

// List returns every alive agent's keys and the number of agents holding
// each key.
func (s *Keyring) List(ctx context.Context, _ *pb.KeyringListRequest) (*pb.KeyringResponse, error) {
	return s.fanOut(ctx, opList, ""), nil
}

// Install installs req.Key on every alive agent.
func (s *Keyring) Install(ctx context.Context, req *pb.KeyringKeyRequest) (*pb.KeyringResponse, error) {
	return s.keyCall(ctx, opInstall, req)
}

// Use makes req.Key the primary key on every alive agent.
func (s *Keyring) Use(ctx context.Context, req *pb.KeyringKeyRequest) (*pb.KeyringResponse, error) {
	return s.keyCall(ctx, opUse, req)
}

// Remove removes req.Key from every alive agent.
func (s *Keyring) Remove(ctx context.Context, req *pb.KeyringKeyRequest) (*pb.KeyringResponse, error) {
	return s.keyCall(ctx, opRemove, req)
}

func (s *Keyring) keyCall(ctx context.Context, op keyringOp, req *pb.KeyringKeyRequest) (*pb.KeyringResponse, error) {
	key, err := validKey(req.GetKey())
	if err != nil {
		return nil, err
	}
	if op == opUse || op == opRemove {
		if err := s.checkStep(ctx, op, key); err != nil {
			s.log.Warn("keyring call refused", "op", string(op), "key", gossip.KeyFingerprint(key), "err", err)
			return nil, err
		}
	}
	resp := s.fanOut(ctx, op, key)
	failed := 0
	for _, r := range resp.Agents {
		if !r.Ok {
			failed++
		}
	}
	s.log.Info("keyring call done", "op", string(op), "key", gossip.KeyFingerprint(key),
		"agents", len(resp.Agents), "failed", failed)
	return resp, nil
}

// Peer returns the KeyringPeer service: s's operations on this agent only.
func (s *Keyring) Peer() pb.KeyringPeerServer { return &keyringPeer{s: s} }

// keyringPeer serves KeyringPeer, which only agents of the cluster may
// call (PeerOnly).
type keyringPeer struct {
	pb.UnimplementedKeyringPeerServer
	s *Keyring
}

func (p *keyringPeer) List(context.Context, *pb.KeyringListRequest) (*pb.KeyringAgentResult, error) {
	return p.s.applyLocal(opList, ""), nil
}

func (p *keyringPeer) Install(_ context.Context, req *pb.KeyringKeyRequest) (*pb.KeyringAgentResult, error) {
	return p.s.applyLocal(opInstall, req.GetKey()), nil
}

func (p *keyringPeer) Use(_ context.Context, req *pb.KeyringKeyRequest) (*pb.KeyringAgentResult, error) {
	return p.s.applyLocal(opUse, req.GetKey()), nil
}

func (p *keyringPeer) Remove(_ context.Context, req *pb.KeyringKeyRequest) (*pb.KeyringAgentResult, error) {
	return p.s.applyLocal(opRemove, req.GetKey()), nil
}
