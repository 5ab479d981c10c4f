package node

import "testing"

// TestRoomClassIsAPowerOfTwoAtMostTheRoom: the room an agent announces is
// the largest power of two not above it, so that it changes only when the
// room halves or doubles.
func TestRoomClassIsAPowerOfTwoAtMostTheRoom(t *testing.T) {
	for _, tc := range []struct{ room, want int64 }{
		{-5, 0}, {0, 0}, {1, 1}, {3, 2}, {20 << 20, 16 << 20}, {1 << 40, 1 << 40}, {1<<62 + 7, 1 << 62}, {1<<63 - 1, 1 << 62},
	} {
		if got := roomClass(tc.room); got != tc.want {
			t.Errorf("roomClass(%d) = %d, want %d", tc.room, got, tc.want)
		}
	}
}

// TestAgentAnnouncesItsShardRoom: the agent's gossip meta carries its
// shard store's room class, and a change of class is reported as one to
// announce.
func TestAgentAnnouncesItsShardRoom(t *testing.T) {
	cfg := testConfig(t)
	cfg.ShardMaxBytes = 20 << 20
	n := startNode(t, cfg)
	if got := n.selfMeta().ShardRoom; got != 16<<20 {
		t.Fatalf("meta announces %d bytes of shard room, want 16 MiB (20 MiB max, nothing stored)", got)
	}
	if n.checkShardRoom() {
		t.Fatal("a check that found the same room reported a change")
	}
}
