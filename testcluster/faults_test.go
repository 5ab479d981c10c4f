package testcluster

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestFullOneWayLossCutsConnectionsButOnlyOneDirectionOfPackets(t *testing.T) {
	nw := newNetwork()
	nw.setLoss("n1", "n2", 1)
	if nw.linked("n1", "n2") || nw.linked("n2", "n1") {
		t.Errorf("connections between n1 and n2 still work with every packet n1 -> n2 lost")
	}
	if !nw.linked("n1", "n3") || !nw.linked("n3", "n2") {
		t.Errorf("connections through n3 are cut")
	}
	if nw.packetPasses("n1", "n2") {
		t.Errorf("a packet n1 -> n2 passed")
	}
	if !nw.packetPasses("n2", "n1") {
		t.Errorf("a packet n2 -> n1 was lost")
	}
	nw.restoreLinks()
	if !nw.linked("n1", "n2") || !nw.packetPasses("n1", "n2") {
		t.Errorf("n1 -> n2 still cut after restoreLinks")
	}
}

func TestPartialLossDropsSomePacketsAndNoConnection(t *testing.T) {
	nw := newNetwork()
	nw.setLoss("n1", "n2", 0.5)
	if !nw.linked("n1", "n2") {
		t.Errorf("a partial loss cut the connection")
	}
	passed := 0
	for range 1000 {
		if nw.packetPasses("n1", "n2") {
			passed++
		}
	}
	if passed == 0 || passed == 1000 {
		t.Errorf("%d of 1000 packets passed at a loss rate of 0.5", passed)
	}
}

func TestDamageFile(t *testing.T) {
	orig := bytes.Repeat([]byte("shard"), 100)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, how := range []ShardDamage{ShardDelete, ShardTruncate, ShardFlip} {
		path := filepath.Join(t.TempDir(), "0.1.shard")
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := damageFile(path, rng, how); err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		got, err := os.ReadFile(path)
		switch how {
		case ShardDelete:
			if !os.IsNotExist(err) {
				t.Errorf("delete: the file is still there (%v)", err)
			}
		case ShardTruncate:
			if err != nil || len(got) >= len(orig) || !bytes.Equal(got, orig[:len(got)]) {
				t.Errorf("truncate: %d bytes left of %d (%v)", len(got), len(orig), err)
			}
		case ShardFlip:
			diff := 0
			for i := range got {
				if got[i] != orig[i] {
					diff++
				}
			}
			if err != nil || len(got) != len(orig) || diff != 1 {
				t.Errorf("flip: %d bytes differ, length %d of %d (%v)", diff, len(got), len(orig), err)
			}
		}
	}
	if err := damageFile(filepath.Join(t.TempDir(), "gone.shard"), rng, ShardFlip); err != nil {
		t.Errorf("damaging a file that vanished: %v", err)
	}
}

func TestSlowShardDiskDelaysOnlyItsAgentsShardFsyncs(t *testing.T) {
	var d diskFaults
	n1, n2 := d.shardSyncDelay("n1"), d.shardSyncDelay("n2")
	d.set("n1", shardFsync, 50*time.Millisecond)
	if got := n1(); got != 50*time.Millisecond {
		t.Errorf("n1's shard fsync delay is %s, want 50ms", got)
	}
	if got := n2(); got != 0 {
		t.Errorf("n2's shard fsync delay is %s, want none", got)
	}
	if got := d.get("n1", raftLog); got != 0 {
		t.Errorf("n1's Raft log delay is %s; a slow shard disk must not slow the Raft log", got)
	}
	d.set("n1", shardFsync, 0)
	if got := n1(); got != 0 {
		t.Errorf("n1's shard fsync delay is %s after it was set back to zero", got)
	}
}

// TestDelayedLinkFailsAWriteOrReadPastItsDeadlineAndLosesNothing: a write
// or read of a delayed direction whose deadline passes while it waits
// fails with a timeout; the bytes of a read that timed out come with the
// next read, in order; the other direction and RestoreLinks' links are
// not delayed.
func TestDelayedLinkFailsAWriteOrReadPastItsDeadlineAndLosesNothing(t *testing.T) {
	nw := newNetwork()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nw.register("n2", ln.Addr().String())
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := nw.dialer("n1")(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := <-accepted
	defer srv.Close()

	nw.setDelay("n1", "n2", time.Hour)
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := c.Write([]byte("late")); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a write n1 -> n2 delayed an hour with a 50 ms deadline: %d bytes, %v; want 0 and a timeout", n, err)
	}
	// n2 -> n1 is not delayed.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	srv.Write([]byte("ab"))
	buf := make([]byte, 8)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ab" {
		t.Fatalf("read of n2's answer: %q, %v; want \"ab\"", buf[:n], err)
	}

	nw.setDelay("n2", "n1", time.Hour)
	srv.Write([]byte("cd"))
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := c.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a read of n2 -> n1 delayed an hour with a 50 ms deadline: %q, %v; want nothing and a timeout", buf[:n], err)
	}
	nw.restoreLinks()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "cd" {
		t.Errorf("the next read after the delay ended: %q, %v; want the held \"cd\"", buf[:n], err)
	}
	if _, err := c.Write([]byte("on time")); err != nil {
		t.Errorf("a write after RestoreLinks: %v", err)
	}
}

// TestFailDiskRefusesOnlyItsAgentsRaftLogWrites: while on, the agent's
// Raft log refuses appends and truncations and still reads; other
// agents' logs and the agent's after FailDisk(false) write as before.
func TestFailDiskRefusesOnlyItsAgentsRaftLogWrites(t *testing.T) {
	var d diskFaults
	n1 := d.wrapLog("n1")(raft.NewInmemStore())
	n2 := d.wrapLog("n2")(raft.NewInmemStore())
	if err := n1.StoreLog(&raft.Log{Index: 1, Term: 1}); err != nil {
		t.Fatal(err)
	}
	d.setFault("n1", raftFailing, true) // FailDisk(n1, true)
	if err := n1.StoreLog(&raft.Log{Index: 2, Term: 1}); !errors.Is(err, errDiskFailed) {
		t.Errorf("StoreLog on a failing disk: %v", err)
	}
	if err := n1.StoreLogs([]*raft.Log{{Index: 2, Term: 1}}); !errors.Is(err, errDiskFailed) {
		t.Errorf("StoreLogs on a failing disk: %v", err)
	}
	if err := n1.DeleteRange(1, 1); !errors.Is(err, errDiskFailed) {
		t.Errorf("DeleteRange on a failing disk: %v", err)
	}
	var got raft.Log
	if err := n1.GetLog(1, &got); err != nil {
		t.Errorf("a read on a failing disk: %v", err)
	}
	if err := n2.StoreLog(&raft.Log{Index: 1, Term: 1}); err != nil {
		t.Errorf("another agent's log: %v", err)
	}
	d.setFault("n1", raftFailing, false)
	if err := n1.StoreLog(&raft.Log{Index: 2, Term: 1}); err != nil {
		t.Errorf("after the disk is back: %v", err)
	}
}
