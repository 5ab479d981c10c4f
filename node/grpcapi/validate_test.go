package grpcapi

import (
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/zrpcio/zrpc/api/apierr"
	pb "github.com/zrpcio/zrpc/api/zrpcpb"
)

func TestCheckTimesNamesTheFieldPathThroughLists(t *testing.T) {
	bad := &pb.Instance{Service: "s", Id: "b", Check: &pb.Check{Ttl: &durationpb.Duration{Seconds: 1, Nanos: -1}}}
	resp := &pb.WatchResponse{Events: []*pb.Event{{Instance: &pb.Instance{Service: "s", Id: "a"}}, {Instance: bad}}}
	err := checkTimes(resp.ProtoReflect(), "watch")
	if st := status.Convert(apierr.ToStatus(err)); err == nil || !strings.Contains(st.Message(), "watch.events[1].instance.check.ttl:") {
		t.Fatalf("checkTimes = %v, want InvalidArgument naming watch.events[1].instance.check.ttl", err)
	}
	if err := checkTimes((&pb.WatchResponse{Events: []*pb.Event{{Instance: &pb.Instance{Id: "a"}}}}).ProtoReflect(), ""); err != nil {
		t.Fatalf("well-formed: %v", err)
	}
}

// TestCheckTimesOfARegistrationAllocatesNothing: the interceptors check
// every request's times; for a well-formed registration the check visits
// only the fields that can hold a Duration or Timestamp and allocates
// nothing.
func TestCheckTimesOfARegistrationAllocatesNothing(t *testing.T) {
	req := (&pb.RegisterRequest{Instance: &pb.Instance{
		Service: "user.rpc", Id: "u1", Address: "10.1.2.3:9001", Zone: "zone-a", Version: "v1",
		Tags:     []string{"primary", "canary"},
		Metadata: map[string]string{"region": "eu-west", "owner": "team-users"},
		Check:    &pb.Check{Ttl: durationpb.New(30e9)},
	}}).ProtoReflect()
	if err := checkTimes(req, ""); err != nil {
		t.Fatalf("well-formed registration: %v", err)
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = checkTimes(req, "") }); allocs != 0 {
		t.Errorf("checkTimes of a registration allocates %.0f times, want 0", allocs)
	}
}

// TestTimeValidAgreesWithCheckValid: the shortcut for common values gives
// CheckValid's verdict at and past the edges of the valid ranges.
func TestTimeValidAgreesWithCheckValid(t *testing.T) {
	type secsNanos struct {
		secs  int64
		nanos int32
	}
	for _, v := range []secsNanos{
		{0, 0}, {1, 999_999_999}, {1, 1_000_000_000}, {1, -1}, {-1, -1}, {-1, 1}, {-1, 0},
		{maxDurationSeconds, 0}, {maxDurationSeconds + 1, 0}, {-maxDurationSeconds, 0}, {-maxDurationSeconds - 1, 0},
		{maxTimestampSeconds, 0}, {maxTimestampSeconds + 1, 0}, {-62135596800, 0}, {-62135596801, 0},
	} {
		d := &durationpb.Duration{Seconds: v.secs, Nanos: v.nanos}
		if got, want := timeValid(d.ProtoReflect()), d.CheckValid(); (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
			t.Errorf("duration %v: timeValid %v, CheckValid %v", v, got, want)
		}
		ts := &timestamppb.Timestamp{Seconds: v.secs, Nanos: v.nanos}
		if got, want := timeValid(ts.ProtoReflect()), ts.CheckValid(); (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
			t.Errorf("timestamp %v: timeValid %v, CheckValid %v", v, got, want)
		}
	}
}

// TestNamesAreCheckedAsTheirPatternsSay: service names, ids and zones
// pass exactly when they match ^[a-zA-Z0-9][a-zA-Z0-9._-]*$, metadata
// keys ^[a-zA-Z0-9][a-zA-Z0-9._/-]*$.
func TestNamesAreCheckedAsTheirPatternsSay(t *testing.T) {
	names := regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]*$`)
	keys := regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._/-]*$`)
	cases := []string{"", "a", "Z9", "user.rpc", "a-b_c.d", "a/b", "/a", ".a", "-a", "_a", "a b", "a\n", "\na",
		"é", "aé", "a\x00", "a:b", "9", "a..", "A/B/C", "a@b", "a+b", "[a]", "a*"}
	for c := byte(0); c < 0x80; c++ {
		cases = append(cases, "a"+string(c), string(c)+"a")
	}
	for _, v := range cases {
		if got, want := isName(v, namePunct), names.MatchString(v); got != want {
			t.Errorf("isName(%q) as a name = %v, the pattern says %v", v, got, want)
		}
		if got, want := isName(v, metaKeyPunct), keys.MatchString(v); got != want {
			t.Errorf("isName(%q) as a metadata key = %v, the pattern says %v", v, got, want)
		}
	}
}
