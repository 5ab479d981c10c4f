package regmodel

import (
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestStateOfNamesEveryInstanceNoClientRegistered(t *testing.T) {
	registered := Input{Kind: Register, ID: 1, Value: "7"}.Instance("svc")
	insts := []*pb.Instance{
		registered,
		{Service: "svc", Id: "i9", Metadata: map[string]string{"v": "1"}},  // id out of range
		{Service: "svc", Id: "i01", Metadata: map[string]string{"v": "1"}}, // not how ID spells 1
		{Service: "svc", Id: "i2"}, // no value
	}
	s, err := StateOf(insts)
	if want := (State{"", "7"}); s != want {
		t.Errorf("state %s, want %s", s, want)
	}
	if err == nil {
		t.Fatal("no error for instances no client registered")
	}
	for _, id := range []string{`"i9"`, `"i01"`, `"i2"`} {
		if !strings.Contains(err.Error(), id) {
			t.Errorf("error %q does not name instance %s", err, id)
		}
	}
	if s, err := StateOf(insts[:1]); err != nil || s != (State{"", "7"}) {
		t.Errorf("StateOf(a registered instance) = %s, %v", s, err)
	}
}

func TestExplainShowsWhereTheLinearizationStops(t *testing.T) {
	ops := []porcupine.Operation{
		{ClientId: 0, Call: 0, Return: 10, Input: Input{Kind: Register, ID: 0, Value: "a"}, Output: Output{}},
		{ClientId: 1, Call: 20, Return: 30, Input: Input{Kind: Get, Mode: pb.Consistency_CONSISTENT}, Output: Output{}},
	}
	res, info := porcupine.CheckOperationsVerbose(Model, ops, 10*time.Second)
	if res != porcupine.Illegal {
		t.Fatalf("porcupine says %s for a read that misses an earlier write", res)
	}
	lines := Explain(ops, info)
	if len(lines) != 2 {
		t.Fatalf("want a header and the one operation near the stuck read, got %q", lines)
	}
	if !strings.Contains(lines[0], "placed 1 operations") || !strings.Contains(lines[0], "{i0=a}") {
		t.Errorf("header %q does not give the placed count and the state reached", lines[0])
	}
	if !strings.HasPrefix(lines[1], ">>") || !strings.Contains(lines[1], "get(CONSISTENT) -> {}") || !strings.Contains(lines[1], "not placed") {
		t.Errorf("line %q does not mark the read porcupine could not place", lines[1])
	}

	res, info = porcupine.CheckOperationsVerbose(Model, ops[:1], 10*time.Second)
	if res != porcupine.Ok {
		t.Fatalf("porcupine says %s for one register", res)
	}
	if lines := Explain(ops[:1], info); lines != nil {
		t.Errorf("Explain of a linearizable history = %q, want nothing", lines)
	}
}

func TestByInstanceGivesEachIDItsWritesAndItsViewOfEveryRead(t *testing.T) {
	ops := []porcupine.Operation{
		{ClientId: 0, Input: Input{Kind: Register, ID: 1, Value: "a"}, Output: Output{}, Call: 0, Return: 10},
		{ClientId: 1, Input: Input{Kind: Get}, Output: Output{Seen: State{"x", "a"}}, Call: 20, Return: 30},
	}
	parts := ByInstance(ops)
	if len(parts) != IDs {
		t.Fatalf("%d parts, want %d", len(parts), IDs)
	}
	if len(parts[1]) != 2 || parts[1][1].Output.(Output).Seen != (State{1: "a"}) {
		t.Errorf("part of i1 = %v, want the register and the read seeing only i1=a", parts[1])
	}
	if len(parts[0]) != 1 || parts[0][0].Output.(Output).Seen != (State{0: "x"}) {
		t.Errorf("part of i0 = %v, want only the read seeing only i0=x", parts[0])
	}
	// i0's part has a read of a value nobody wrote: not linearizable.
	if porcupine.CheckOperations(Model, parts[0]) {
		t.Error("a read of a value never written passed")
	}
	if !porcupine.CheckOperations(Model, parts[1]) {
		t.Error("i1's register then read failed")
	}
}
