// Package regmodel is the registry's sequential specification for
// porcupine: the model that zrpc's linearizability checks (node's and the
// robustness suite's) hold a recorded history of registry operations to.
//
// The model's registry is one service with instance ids i0..i3, each
// registered with a unique metadata value "v". Clients register, deregister
// and read the service; Model says which answers a sequential registry could
// have given. Only tests use this package; it is not a registry.
package regmodel

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

// IDs is how many instance ids the model knows: i0 .. i(IDs-1).
const IDs = 4

// ID is the instance id of model id i: "i0", "i1", ...
func ID(i int) string { return "i" + strconv.Itoa(i) }

// State is the model's registry: the metadata value "v" of each instance
// id, "" when the id is not registered. It is an array, so copying it (as
// Step does on every call) never shares storage with the caller's state.
type State [IDs]string

func (s State) String() string {
	var parts []string
	for id, v := range s {
		if v != "" {
			parts = append(parts, ID(id)+"="+v)
		}
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// StateOf turns instances of the model's service into a State. The error
// names every instance that is not one a client could have registered (an
// id outside i0..i3, or no value "v"); the State holds the others.
func StateOf(insts []*pb.Instance) (State, error) {
	var (
		s    State
		errs []string
	)
	for _, inst := range insts {
		id, err := strconv.Atoi(strings.TrimPrefix(inst.Id, "i"))
		if err != nil || id < 0 || id >= IDs || ID(id) != inst.Id || inst.Metadata["v"] == "" {
			errs = append(errs, inst.String())
			continue
		}
		s[id] = inst.Metadata["v"]
	}
	if errs != nil {
		return s, fmt.Errorf("instance no client registered: %s", strings.Join(errs, "; "))
	}
	return s, nil
}

// Kind is what an operation does.
type Kind int

const (
	Register Kind = iota
	Deregister
	Get
)

func (k Kind) String() string { return [...]string{"register", "deregister", "get"}[k] }

// Input is one operation as a client sent it.
type Input struct {
	Kind  Kind
	ID    int            // Register, Deregister
	Value string         // Register: the unique metadata value
	Mode  pb.Consistency // Get: the read's consistency mode
}

// Instance is what a Register input registers in service.
func (in Input) Instance(service string) *pb.Instance {
	return &pb.Instance{Service: service, Id: ID(in.ID), Address: fmt.Sprintf("127.0.0.1:%d", 9000+in.ID),
		Metadata: map[string]string{"v": in.Value}}
}

// Result is how an operation ended.
type Result int

const (
	OK       Result = iota
	NotFound        // Deregister: the instance was not registered
	Unknown         // a write that failed: it may or may not have taken effect
)

func (r Result) String() string { return [...]string{"ok", "not found", "unknown"}[r] }

// Output is what a client got back.
type Output struct {
	Result Result
	Seen   State // Get: what it returned
}

// Model is the registry's sequential specification. A write of unknown
// outcome is recorded with Return = MaxInt64, so the checker may place it
// anywhere after its call (including after every other operation, which is
// the same as "never applied"); wherever it is placed it has its effect.
// A Get must see exactly the state; its Mode is not the model's concern
// (the caller gives porcupine only the reads that promise linearizability).
var Model = porcupine.Model{
	Init: func() any { return State{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(State), input.(Input), output.(Output) // s is a copy
		switch in.Kind {
		case Register:
			s[in.ID] = in.Value
			return true, s
		case Deregister:
			present := s[in.ID] != ""
			s[in.ID] = ""
			switch out.Result {
			case OK:
				return present, s
			case NotFound:
				return !present, s
			default:
				return true, s
			}
		default:
			return out.Seen == s, s
		}
	},
	Equal: func(a, b any) bool { return a.(State) == b.(State) },
	Hash: func(state any) uint64 {
		h := fnv.New64a()
		for _, v := range state.(State) {
			h.Write([]byte(v))
			h.Write([]byte{0})
		}
		return h.Sum64()
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(Input), output.(Output)
		switch in.Kind {
		case Register:
			return fmt.Sprintf("register(%s, v=%s) -> %s", ID(in.ID), in.Value, out.Result)
		case Deregister:
			return fmt.Sprintf("deregister(%s) -> %s", ID(in.ID), out.Result)
		}
		return fmt.Sprintf("get(%s) -> %s", in.Mode, out.Seen)
	},
	DescribeState:             func(state any) string { return state.(State).String() },
	DescribeOperationMetadata: func(info any) string { return fmt.Sprint(info) },
}

// Explain says where the longest linearization porcupine found for ops gets
// stuck: the state it reached and every operation overlapping the
// earliest-returning one it could not place, one line each. ops is the
// history info was checked from, in one partition. It returns nothing when
// every operation was placed.
func Explain(ops []porcupine.Operation, info porcupine.LinearizationInfo) []string {
	var longest []int
	for _, l := range info.PartialLinearizations()[0] { // ids index ops: there is one partition
		if len(l) > len(longest) {
			longest = l
		}
	}
	placedAt := make(map[int]int, len(longest))
	state := Model.Init()
	for n, id := range longest {
		placedAt[id] = n
		_, state = Model.Step(state, ops[id].Input, ops[id].Output)
	}
	stuck := -1
	for id, op := range ops {
		if _, ok := placedAt[id]; !ok && (stuck < 0 || op.Return < ops[stuck].Return) {
			stuck = id
		}
	}
	if stuck < 0 {
		return nil
	}
	lines := []string{fmt.Sprintf("porcupine placed %d operations (#n: n-th), reaching %v; >> marks the earliest-returning operation left over:",
		len(longest), state)}
	var near []int
	for id, op := range ops {
		if op.Call <= ops[stuck].Return && op.Return >= ops[stuck].Call {
			near = append(near, id)
		}
	}
	slices.SortFunc(near, func(a, b int) int { return cmp.Compare(ops[a].Call, ops[b].Call) })
	for _, id := range near {
		op, mark, ret, place := ops[id], "  ", "pending", "not placed"
		if id == stuck {
			mark = ">>"
		}
		if op.Return != math.MaxInt64 {
			ret = time.Duration(op.Return).String()
		}
		if n, ok := placedAt[id]; ok {
			place = fmt.Sprintf("#%d", n)
		}
		lines = append(lines, fmt.Sprintf("%s client %d  %-12v %-12s %-45s %-10s (%v)", mark, op.ClientId, time.Duration(op.Call), ret,
			Model.DescribeOperation(op.Input, op.Output), place, op.Metadata))
	}
	return lines
}

// ByInstance splits a history into one per instance id: that id's writes,
// and every read with its view of that id alone. Linearizability is local,
// so checking each part against Model checks every single-id promise; what
// it gives up is the check that one read saw all ids at a single point. It
// keeps long histories with many writes of unknown outcome (kills,
// partitions) checkable in bounded time, where one search over all ids at
// once can run out of time.
func ByInstance(history []porcupine.Operation) [][]porcupine.Operation {
	parts := make([][]porcupine.Operation, IDs)
	for _, op := range history {
		in := op.Input.(Input)
		if in.Kind != Get {
			parts[in.ID] = append(parts[in.ID], op)
			continue
		}
		out := op.Output.(Output)
		for id := range IDs {
			view := out
			view.Seen = State{}
			view.Seen[id] = out.Seen[id]
			part := op
			part.Output = view
			parts[id] = append(parts[id], part)
		}
	}
	return parts
}
