package clientchain

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
)

func deadlineOf(t *testing.T, ic grpc.UnaryClientInterceptor, ctx context.Context, method string) (time.Time, bool) {
	t.Helper()
	var dl time.Time
	var ok bool
	inv := func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		dl, ok = ctx.Deadline()
		return nil
	}
	if err := call(t, ic, ctx, method, inv); err != nil {
		t.Fatal(err)
	}
	return dl, ok
}

func TestTimeoutSetsDeadlineNoLaterThanD(t *testing.T) {
	before := time.Now()
	dl, ok := deadlineOf(t, Timeout(2*time.Second), context.Background(), "/s/M")
	if !ok {
		t.Fatal("no deadline set")
	}
	if dl.After(time.Now().Add(2 * time.Second)) {
		t.Errorf("deadline %v later than now+2s", dl)
	}
	if dl.Before(before) {
		t.Errorf("deadline %v before the call started", dl)
	}
}

func TestTimeoutNeverExtendsCallerDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	want, _ := ctx.Deadline()
	dl, ok := deadlineOf(t, Timeout(time.Hour), ctx, "/s/M")
	if !ok || !dl.Equal(want) {
		t.Errorf("deadline = %v (%v), want caller's %v", dl, ok, want)
	}
}

func TestTimeoutPerMethodAndOff(t *testing.T) {
	ic := TimeoutPerMethod(time.Hour, map[string]time.Duration{"/s/Fast": time.Second, "/s/Watch": 0})
	dl, ok := deadlineOf(t, ic, context.Background(), "/s/Fast")
	if !ok || dl.After(time.Now().Add(time.Second)) {
		t.Errorf("/s/Fast deadline = %v (%v), want within 1s", dl, ok)
	}
	if _, ok := deadlineOf(t, ic, context.Background(), "/s/Watch"); ok {
		t.Error("/s/Watch got a deadline, override 0 means none")
	}
	if _, ok := deadlineOf(t, Timeout(0), context.Background(), "/s/M"); ok {
		t.Error("Timeout(0) set a deadline")
	}
}
