package robustness

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/teststack"
	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/raftstore"
)

// Checks of the cluster itself once the faults are healed and the traffic
// has stopped.

// replicaDigest is everything an agent's replica holds, with its revision.
func replicaDigest(n *node.Node) (uint64, string) {
	fsm := n.Store().FSM()
	rev := fsm.Revision()
	var b strings.Builder
	insts, _ := fsm.AllInstances()
	blobs, _ := fsm.Blobs("")
	msgs := []proto.Message{}
	for _, m := range insts {
		msgs = append(msgs, m)
	}
	for _, m := range fsm.Nodes() {
		msgs = append(msgs, m)
	}
	for _, m := range fsm.Sessions() {
		msgs = append(msgs, m)
	}
	for _, m := range blobs {
		msgs = append(msgs, m)
	}
	for _, m := range msgs {
		b.WriteString(prototext.MarshalOptions{}.Format(m))
		b.WriteByte('\n')
	}
	if fsm.Revision() != rev {
		return 0, "" // moved while reading
	}
	return rev, b.String()
}

// checkConverged waits until every running agent's replica holds the same
// revision and the same state.
func (r *run) checkConverged() {
	var last []string
	deadline := time.Now().Add(settleFor)
	for {
		last = last[:0]
		same := true
		var ref string
		for _, i := range r.running() {
			n := r.c.Node(i)
			if n == nil {
				continue
			}
			rev, digest := replicaDigest(n)
			key := fmt.Sprintf("%d:%x", rev, digest)
			if ref == "" {
				ref = key
			}
			same = same && rev != 0 && key == ref
			last = append(last, fmt.Sprintf("%s at revision %d", r.c.Name(i), rev))
		}
		if same {
			r.t.Logf("robustness: converged: %s", strings.Join(last, ", "))
			return
		}
		if time.Now().After(deadline) {
			r.t.Errorf("agents did not converge to one revision and state within %s: %s", settleFor, strings.Join(last, ", "))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkMembership: every running agent is in the Raft configuration and in
// the registry as a passing node, and an agent that left is in neither. An
// agent reaped by the reap fault has come back; checkRemovals checks that
// no other agent was reaped.
func (r *run) checkMembership() {
	r.mu.Lock()
	left := slices.Clone(r.left)
	r.mu.Unlock()
	var problem string
	deadline := time.Now().Add(settleFor)
	for {
		problem = r.membershipProblem(left)
		if problem == "" {
			return
		}
		if time.Now().After(deadline) {
			r.t.Errorf("membership after healing: %s", problem)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// inRaft reports whether agent name is in n's Raft configuration.
func inRaft(n *node.Node, name string) bool {
	servers, err := n.Store().Servers()
	if err != nil {
		return false
	}
	for _, s := range servers {
		if s.ID == name {
			return true
		}
	}
	return false
}

func (r *run) membershipProblem(left []int) string {
	l := r.c.Leader()
	if l == nil {
		return "no leader"
	}
	servers, err := l.Store().Servers()
	if err != nil {
		return err.Error()
	}
	inRaft := map[string]raftstore.Suffrage{}
	for _, s := range servers {
		inRaft[s.ID] = s.Suffrage
	}
	for _, i := range r.running() {
		name := r.c.Name(i)
		if _, ok := inRaft[name]; !ok {
			return fmt.Sprintf("running agent %s is not in the Raft configuration %v (reaped?)", name, inRaft)
		}
		nd := l.Store().FSM().Node(name)
		if nd == nil {
			return fmt.Sprintf("running agent %s is not in the registry's nodes (reaped?)", name)
		}
		if nd.Health != pb.Health_PASSING {
			return fmt.Sprintf("running agent %s is %s in the registry", name, nd.Health)
		}
	}
	for _, i := range left {
		name := r.c.Name(i)
		if _, ok := inRaft[name]; ok {
			return fmt.Sprintf("agent %s left but is still in the Raft configuration", name)
		}
		if l.Store().FSM().Node(name) != nil {
			return fmt.Sprintf("agent %s left but is still in the registry's nodes", name)
		}
	}
	return ""
}

// checkSessions: every session was closed (the residents' too), so no
// session and none of their instances may remain.
func (r *run) checkSessions() {
	b := r.sessions
	r.t.Logf("sessions: %d opened, %d instances registered, %d failed calls", b.opened, b.registered, b.failed)
	if b.opened == 0 {
		r.t.Errorf("sessions: none opened; the check would mean nothing")
	}
	var left string
	deadline := time.Now().Add(settleFor)
	for {
		l := r.c.Leader()
		left = "no leader"
		if l != nil {
			insts, _ := l.Store().FSM().Instances(sessionService)
			resident, _ := l.Store().FSM().Instances(residentService)
			sessions := l.Store().FSM().Sessions()
			if len(insts) == 0 && len(resident) == 0 && len(sessions) == 0 {
				return
			}
			left = fmt.Sprintf("%d instances of %s, %d of %s and %d sessions: %v",
				len(insts), sessionService, len(resident), residentService, len(sessions), sessions)
		}
		if time.Now().After(deadline) {
			r.t.Errorf("sessions: every session was closed, yet the registry still holds %s", left)
			r.t.Logf("sessions: the agents' session handlers still running:\n%s", goroutinesIn("(*registryServer).Session"))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkTTL: with renewals going again, every TTL instance that was
// registered is back to passing.
func (r *run) checkTTL() {
	b := r.ttl
	r.t.Logf("ttl: %d instances registered, %d renewals, %d registered again after the registry lost them, %d failed calls",
		len(b.registered), b.renewals, b.again, b.failed)
	if len(b.registered) == 0 {
		r.t.Errorf("ttl: no instance registered; the check would mean nothing")
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rng := r.workerRand(301)
		for ctx.Err() == nil {
			r.renewTTLs(rng)
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	defer func() { cancel(); <-done }()
	var state string
	deadline := time.Now().Add(settleFor)
	for {
		state = ""
		if l := r.c.Leader(); l != nil {
			b.mu.Lock()
			registered := maps.Clone(b.registered)
			b.mu.Unlock()
			for id := range registered {
				inst := l.Store().FSM().Instance(ttlService, id)
				switch {
				case inst == nil:
					state += fmt.Sprintf(" %s is gone;", id)
				case inst.Health != pb.Health_PASSING:
					state += fmt.Sprintf(" %s is %s;", id, inst.Health)
				}
			}
		} else {
			state = "no leader"
		}
		if state == "" {
			return
		}
		if time.Now().After(deadline) {
			r.t.Errorf("ttl: renewed instances did not all pass again:%s", state)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// goroutinesIn returns the stacks of this process's goroutines that are
// in function fn (the agents run in the test process).
func goroutinesIn(fn string) string {
	return strings.Join(teststack.Goroutines("", fn), "\n\n")
}
