package raftstore

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/node/health"
)

// healthQuota is the limits a leader of a cluster at version 6 stamps on
// a SetHealth, with limit as max_registry_bytes.
func healthQuota(limit int64) *pb.Quota {
	return &pb.Quota{RegistryOverheads: true, HealthOutputs: true, MaxRegistryBytes: uint64(limit)}
}

func withQuotaCmd(cmd *pb.Command, q *pb.Quota) *pb.Command {
	cmd.Quota = q
	return cmd
}

// at stamps cmd with the leader's time t.
func at(cmd *pb.Command, t int64) *pb.Command {
	cmd.Time = t
	return cmd
}

// A registry at max_registry_bytes records every change of health, but
// the health outputs beside them grow it by at most a cut mark per
// instance, once: not by 4 KiB per instance at every check's write.
func TestFSMQuotaBoundsTheHealthOutputsOfAFullRegistry(t *testing.T) {
	const n = 8
	d := fillUnlimited(t, n)
	limit := d.fsm.RegistryBytes() // full
	q := healthQuota(limit)
	most := limit + n*int64(len(CutOutputMark)+2) // a mark per instance, its tag and length
	// Every health change at a time of as many bytes as the
	// registrations' (fsmDriver's index*1000): the stamps do not grow.
	const when = 16000
	var settled int64
	for round := range 4 {
		h := []pb.Health{pb.Health_CRITICAL, pb.Health_WARNING}[round%2]
		output := strings.Repeat(fmt.Sprint(round), health.MaxOutput)
		if round < 2 {
			d.mustApply(at(withQuotaCmd(setNodeHealthCmd("n1", h, output), q), when)) // an agent's instances at once
		} else {
			for i := range n {
				d.mustApply(at(withQuotaCmd(setHealthCmd(h, output, instRef(fmt.Sprintf("svc%d", i%4), fmt.Sprint(i))), q), when))
			}
		}
		got := d.fsm.RegistryBytes()
		if got > most {
			t.Fatalf("round %d: the registry counts %d bytes after health outputs of %d bytes each; its limit is %d, at most %d with a cut mark on each instance",
				round, got, len(output), limit, most)
		}
		insts, _ := d.fsm.AllInstances()
		for _, in := range insts {
			if in.Health != h || !strings.HasSuffix(in.HealthOutput, CutOutputMark) || len(in.HealthOutput) >= len(output) {
				t.Fatalf("round %d: %s/%s is %v with a %d-byte output ending %q; want %v, its %d-byte output cut with %q",
					round, in.Service, in.Id, in.Health, len(in.HealthOutput), in.HealthOutput[max(0, len(in.HealthOutput)-40):], h, len(output), CutOutputMark)
			}
		}
		if round == 0 {
			settled = got
		} else if got > settled {
			t.Fatalf("round %d: the registry grew from %d to %d bytes by health outputs alone, past its limit %d", round, settled, got, limit)
		}
		checkQuotaCounts(t, fmt.Sprintf("round %d", round), d.fsm)
	}

	// A restored replica counts the outputs as the one it was taken from.
	g := NewFSM(16)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, d.fsm)))); err != nil {
		t.Fatal(err)
	}
	if g.RegistryBytes() != d.fsm.RegistryBytes() {
		t.Fatalf("restored RegistryBytes = %d, want %d", g.RegistryBytes(), d.fsm.RegistryBytes())
	}
	checkQuotaCounts(t, "restored", g)
}

// An output that does not fit whole is cut to the room the registry has
// left, at a character boundary; outputs that fit, or that do not grow
// the registry, are stored whole, and so is every output of a SetHealth
// without Quota.health_outputs (a cluster with a replica at version 5).
func TestFSMQuotaCutsAHealthOutputToTheRoomLeft(t *testing.T) {
	d := fillUnlimited(t, 4)
	const room = 1000
	limit := d.fsm.RegistryBytes() + room
	q := healthQuota(limit)
	long := strings.Repeat("é", health.MaxOutput/2)

	d.mustApply(withQuotaCmd(setHealthCmd(pb.Health_CRITICAL, long, instRef("svc0", "0")), q))
	out := d.fsm.Instance("svc0", "0").HealthOutput
	if !utf8.ValidString(out) || !strings.HasSuffix(out, CutOutputMark) || !strings.HasPrefix(long, strings.TrimSuffix(out, CutOutputMark)) {
		t.Fatalf("a %d-byte output with %d bytes of room is stored as %d bytes (valid UTF-8: %v), ending %q; want its beginning and %q",
			len(long), room, len(out), utf8.ValidString(out), out[max(0, len(out)-40):], CutOutputMark)
	}
	if got := d.fsm.RegistryBytes(); got > limit || got < limit-8 {
		t.Fatalf("the registry counts %d bytes, want the room up to its limit %d filled", got, limit)
	}

	// No room left: the health is recorded, the output is the mark alone.
	d.mustApply(withQuotaCmd(setHealthCmd(pb.Health_CRITICAL, long, instRef("svc1", "1")), q))
	if in := d.fsm.Instance("svc1", "1"); in.Health != pb.Health_CRITICAL || in.HealthOutput != CutOutputMark {
		t.Fatalf("svc1/1 in a full registry is %v, %q; want CRITICAL, %q", in.Health, in.HealthOutput, CutOutputMark)
	}

	// What fits, or shrinks the registry, is stored whole.
	for _, output := range []string{"refused", ""} {
		d.mustApply(withQuotaCmd(setHealthCmd(pb.Health_PASSING, output, instRef("svc0", "0")), q))
		if got := d.fsm.Instance("svc0", "0").HealthOutput; got != output {
			t.Fatalf("an output of %d bytes that shrinks the registry is stored as %q, want %q", len(output), got, output)
		}
	}

	// Without the bound, as replicas of version 5 store it.
	unbounded := healthQuota(limit)
	unbounded.HealthOutputs = false
	d.mustApply(withQuotaCmd(setHealthCmd(pb.Health_CRITICAL, long, instRef("svc2", "2")), unbounded))
	if got := d.fsm.Instance("svc2", "2").HealthOutput; got != long {
		t.Fatalf("an output with no bound on it is stored as %d bytes, want it whole (%d)", len(got), len(long))
	}
	checkQuotaCounts(t, "after outputs", d.fsm)
}

// TestStoreBoundsHealthOutputsOnceEveryServerAppliesIt: the leader's
// SetHealth keeps Quota.health_outputs only when every Raft server
// applies state machine version 6; with a replica at 5, which stores
// every output whole, outputs are stored whole everywhere. Either way a
// replica applying the log holds what the leader's holds.
func TestStoreBoundsHealthOutputsOnceEveryServerAppliesIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version func() int
		bound   bool
	}{
		{"every server at 6", func() int { return 6 }, true},
		{"a server at 5", func() int { return 5 }, false},
		{"not told", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testStoreConfig(t, t.TempDir(), slog.LevelWarn)
			cfg.ClusterFSMVersion = tc.version
			s := openStore(t, New(cfg))
			mustStoreApply(t, s, registerCmd(testInstance("api", "1", "n1")))
			mustStoreApply(t, s, registerCmd(testInstance("api", "2", "n1")))
			output := strings.Repeat("x", health.MaxOutput)
			// A caller's (or a forwarding peer's) flag is not trusted.
			rev := mustStoreApply(t, s, withQuotaCmd(setNodeHealthCmd("n1", pb.Health_CRITICAL, output), healthQuota(s.FSM().RegistryBytes())))
			if got := loggedCommand(t, s, rev).GetQuota().GetHealthOutputs(); got != tc.bound {
				t.Fatalf("entry %d has health_outputs %v, want %v", rev, got, tc.bound)
			}
			insts, _ := s.FSM().AllInstances()
			for _, in := range insts {
				if cut := in.HealthOutput != output; cut != tc.bound || in.Health != pb.Health_CRITICAL {
					t.Fatalf("%s/%s is %v with a %d-byte output; want CRITICAL, cut: %v", in.Service, in.Id, in.Health, len(in.HealthOutput), tc.bound)
				}
			}

			want, _ := s.FSM().AllInstances()
			for _, older := range []bool{false, true} {
				if older && tc.bound {
					continue // never proposed to a cluster with a replica at 5
				}
				got, _ := replayLog(t, s, older).AllInstances()
				var b strings.Builder
				if diffMessages(&b, "instance", want, got); b.Len() > 0 {
					t.Fatalf("a replica (version 5: %v) applying the log holds other instances than the leader:\n%s", older, b.String())
				}
			}
		})
	}
}

// replayLog applies s's log to a new state machine, as a replica does; as
// one of version 5 when older, which reads no quota on a SetHealth.
func replayLog(t *testing.T, s *Store, older bool) *FSM {
	t.Helper()
	first, err := s.logs.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.logs.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	f := NewFSM(16)
	for i := first; i <= last; i++ {
		var entry raft.Log
		if err := s.logs.GetLog(i, &entry); err != nil {
			t.Fatal(err)
		}
		if older && entry.Type == raft.LogCommand {
			var cmd pb.Command
			if err := proto.Unmarshal(entry.Data, &cmd); err != nil {
				t.Fatal(err)
			}
			if _, ok := cmd.Kind.(*pb.Command_SetHealth); ok {
				cmd.Quota = nil
				if entry.Data, err = proto.Marshal(&cmd); err != nil {
					t.Fatal(err)
				}
			}
		}
		f.Apply(&entry)
	}
	return f
}

// node/health recognises an output the registry cut by its mark.
func TestCutOutputMarkIsTheOneHealthChecksKnow(t *testing.T) {
	if health.RegistryCutMark != CutOutputMark {
		t.Fatalf("node/health knows the cut mark as %q, the state machine writes %q", health.RegistryCutMark, CutOutputMark)
	}
}
