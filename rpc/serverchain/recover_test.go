package serverchain

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRecover(t *testing.T) {
	for _, kind := range []string{"unary", "stream"} {
		t.Run(kind, func(t *testing.T) {
			log, buf := testLogger(t)
			ic := Recover(log)
			var err error
			if kind == "unary" {
				_, err = ic.Unary(context.Background(), nil, unaryInfo("/svc/Boom"), func(context.Context, any) (any, error) {
					panic("kaboom")
				})
			} else {
				err = ic.Stream(nil, &fakeStream{ctx: context.Background()}, streamInfo("/svc/Boom"), func(any, grpc.ServerStream) error {
					panic("kaboom")
				})
			}
			wantCode(t, err, codes.Internal)
			if msg := status.Convert(err).Message(); msg != "internal error" {
				t.Fatalf("message %q leaks details", msg)
			}
			lines := buf.Lines()
			if len(lines) != 1 {
				t.Fatalf("want one log line, got %d", len(lines))
			}
			for _, want := range []string{"level=ERROR", "method=/svc/Boom", "kaboom", "stack="} {
				if !strings.Contains(lines[0], want) {
					t.Errorf("log line lacks %q", want)
				}
			}
		})
	}
}

func TestRecoverPassesThrough(t *testing.T) {
	u, s := callBoth(context.Background(), Recover(nil), "/svc/M", status.Error(codes.NotFound, "x"))
	wantCode(t, u, codes.NotFound)
	wantCode(t, s, codes.NotFound)
}
