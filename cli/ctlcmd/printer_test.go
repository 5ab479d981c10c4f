package ctlcmd

import (
	"bytes"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/api/zrpcpb"
)

// hostile are values a registering process controls (version, tags,
// metadata) with what they must look like in a table.
var hostile = []struct{ in, want string }{
	{"\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},                                     // clear the screen, cursor home
	{"v1\tfake-col", `v1\tfake-col`},                                       // a tab shifts columns
	{"v1\nuser-9  10.6.6.6:1  passing", `v1\nuser-9  10.6.6.6:1  passing`}, // a fake row
	{"a\rb", `a\rb`},
	{"\u202egnissap", `\u202egnissap`}, // right-to-left override
	{"bad\xffutf8", `bad\xffutf8`},
	{"\x00\x7f", `\x00\x7f`},
	{"zürich-1 ✓", "zürich-1 ✓"}, // printable text stays as it is
	{"", "-"},
}

// checkTerminalSafe fails if out holds a control byte other than the
// newlines ending its lines.
func checkTerminalSafe(t *testing.T, what, out string) {
	t.Helper()
	for i := 0; i < len(out); i++ {
		if c := out[i]; (c < 0x20 && c != '\n') || c == 0x7f {
			t.Errorf("%s: output holds control byte %#x at %d:\n%q", what, c, i, out)
			return
		}
	}
}

func TestTableOutputEscapesControlCharacters(t *testing.T) {
	rows := make([][]string, len(hostile))
	for i, h := range hostile {
		rows[i] = []string{"id", h.in}
	}
	var table bytes.Buffer
	p, _ := newPrinter(&table, outputTable)
	if err := p.table(nil, []string{"id", "version"}, rows); err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, "table", table.String())
	lines := strings.Split(strings.TrimSuffix(table.String(), "\n"), "\n")
	if len(lines) != 1+len(hostile) {
		t.Fatalf("table has %d lines, want %d:\n%s", len(lines), 1+len(hostile), table.String())
	}
	for i, h := range hostile {
		if got := strings.TrimSpace(strings.TrimPrefix(lines[i+1], "id")); got != h.want {
			t.Errorf("cell %q printed as %q, want %q", h.in, got, h.want)
		}
	}

	var out bytes.Buffer
	p, _ = newPrinter(&out, outputTable)
	for _, h := range hostile {
		if err := p.streamRow(nil, []int{4}, []string{"id", h.in}); err != nil {
			t.Fatal(err)
		}
		if err := p.fields(nil, []field{{"Version", h.in}}); err != nil {
			t.Fatal(err)
		}
		if err := p.sentence(nil, "registered "+h.in); err != nil {
			t.Fatal(err)
		}
		if err := p.streamNote("-- " + h.in + " --"); err != nil {
			t.Fatal(err)
		}
	}
	checkTerminalSafe(t, "rows, fields, sentences and notes", out.String())
	if want := 4 * len(hostile); strings.Count(out.String(), "\n") != want {
		t.Errorf("stream output has %d lines, want %d:\n%s", strings.Count(out.String(), "\n"), want, out.String())
	}
}

func TestServiceTableEscapesInstanceFields(t *testing.T) {
	in := &zrpcpb.Instance{Id: "u1", Address: "10.0.0.1:9000", Weight: 100, Zone: "z",
		Version: "1.0\x1b]0;pwned\x07", Tags: []string{"a\x1b[31m", "b"}}
	var out bytes.Buffer
	p, _ := newPrinter(&out, outputTable)
	if err := p.table(nil, []string{"id", "address", "health", "weight", "zone", "version", "tags"}, [][]string{instanceRow(in)}); err != nil {
		t.Fatal(err)
	}
	checkTerminalSafe(t, "service get", out.String())
	if !strings.Contains(out.String(), `1.0\x1b]0;pwned\a`) || !strings.Contains(out.String(), `a\x1b[31m,b`) {
		t.Errorf("escaped row not found:\n%s", out.String())
	}
}

func TestShortenCutsLongHealthOutputs(t *testing.T) {
	if got := shorten("connection refused", 200); got != "connection refused" {
		t.Errorf("short output changed: %q", got)
	}
	long := strings.Repeat("é", 300)
	got := shorten(long, 200)
	if n := len([]rune(got)); n != 200 || !strings.HasSuffix(got, "...") || !strings.HasPrefix(long, strings.TrimSuffix(got, "...")) {
		t.Errorf("shorten(300 runes, 200) = %d runes %q", n, got)
	}
}

// TestBlobStatGroupsShardsNotOK: the shards not ok of a blob print as one
// row per agent and state, their blocks as ranges, not a row per shard.
func TestBlobStatGroupsShardsNotOK(t *testing.T) {
	var shards []*zrpcpb.ShardState
	for b := range uint32(40) {
		shards = append(shards,
			&zrpcpb.ShardState{Block: b, Index: 0, Node: "a1", State: shardOK},
			&zrpcpb.ShardState{Block: b, Index: 1, Node: "a4", State: "node-failed"})
		if b%2 == 0 || b == 7 {
			shards = append(shards, &zrpcpb.ShardState{Block: b, Index: 4, Node: "a5", State: "corrupt"})
		}
	}
	shards = append(shards, &zrpcpb.ShardState{Block: 3, Index: 2, State: "missing"},
		&zrpcpb.ShardState{Block: 3, Index: 3, State: "missing"})
	st := &zrpcpb.BlobStatResponse{Health: "degraded", Shards: shards,
		Blob: &zrpcpb.Blob{Name: "b", DataShards: 3, ParityShards: 2, BlockSize: 1 << 20, Blocks: make([]*zrpcpb.BlobBlock, 40)}}
	var out strings.Builder
	if err := printStat(&printer{w: &out}, st); err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(out.String(), "Shards not ok:\n")
	want := `AGENT  STATE        SHARDS  BLOCKS
-      missing      2       3
a4     node-failed  40      0-39
a5     corrupt      21      0, 2, 4, 6-8, 10, 12, 14, 16, ... (11 more)
`
	if !ok || table != want {
		t.Errorf("output:\n%s\nwant the shards not ok as:\n%s", out.String(), want)
	}
}

func TestRepairStatusSaysWhatWaitingShardsWaitFor(t *testing.T) {
	if got := waitingCell(&zrpcpb.RepairStatusResponse{Waiting: 3}); got != "3" {
		t.Errorf("waiting on the delay only: %q, want 3", got)
	}
	got := waitingCell(&zrpcpb.RepairStatusResponse{Waiting: 40, WaitingForAgent: 38})
	if want := "40 (38 for an agent without a shard of their block: add agents or free space)"; got != want {
		t.Errorf("waiting for agents: %q, want %q", got, want)
	}
}
