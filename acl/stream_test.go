package acl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/zrpcio/zrpc/api/zrpcpb"
	"github.com/zrpcio/zrpc/internal/testwait"
)

// TestOpenStreamsFollowTheirTokensCurrentRights: a stream is authorized
// against what its token grants now, not when the stream opened. Once
// the token is deleted, or its rights no longer cover the stream, the
// stream's next message (one the client sends, or one a watch or a
// server stream sends) ends it, with Unauthenticated or PermissionDenied
// saying so, and the refusal is counted.
func TestOpenStreamsFollowTheirTokensCurrentRights(t *testing.T) {
	session := &grpc.StreamServerInfo{FullMethod: pb.Registry_Session_FullMethodName, IsClientStream: true, IsServerStream: true}
	watch := &grpc.StreamServerInfo{FullMethod: pb.Registry_Watch_FullMethodName, IsServerStream: true}
	save := &grpc.StreamServerInfo{FullMethod: pb.Snapshot_Save_FullMethodName, IsServerStream: true}
	register := func(svc string) *pb.SessionRequest {
		return &pb.SessionRequest{Kind: &pb.SessionRequest_Register{Register: &pb.RegisterRequest{Instance: &pb.Instance{Service: svc}}}}
	}
	keepalive := &pb.SessionRequest{Kind: &pb.SessionRequest_Keepalive{Keepalive: &pb.SessionKeepAlive{}}}
	event := &pb.WatchResponse{Events: []*pb.Event{{Instance: &pb.Instance{Service: "user.rpc"}}}}
	const deleted = "unauthenticated: the stream's ACL token was deleted while it was open"
	for _, c := range []struct {
		name  string
		info  *grpc.StreamServerInfo
		agent bool // the call carries an agent's proof too (forwarded)
		rules string
		// first is received while the token holds rules; then the token
		// is deleted (now "") or its rules become now; then the stream
		// receives next, or, when next is nil, sends sent.
		first proto.Message
		now   string
		next  proto.Message
		sent  proto.Message
		code  codes.Code
		msg   string
	}{
		{name: "session registers after its token is deleted", info: session, rules: `service "user." { write }`,
			first: register("user.rpc"), next: register("user.rpc"), code: codes.Unauthenticated, msg: deleted},
		{name: "session keeps alive after its token is deleted", info: session, rules: `service "user." { write }`,
			first: register("user.rpc"), next: keepalive, code: codes.Unauthenticated, msg: deleted},
		{name: "session registers after its token lost the service", info: session, rules: `service "user." { write }`,
			first: register("user.rpc"), now: `service "order." { write }`, next: register("user.rpc"),
			code: codes.PermissionDenied, msg: `permission denied: token lacks service:write on "user.rpc"`},
		{name: "watch sends after its token is deleted", info: watch, rules: `service "user." { read }`,
			first: &pb.WatchRequest{Service: "user.rpc"}, sent: event, code: codes.Unauthenticated, msg: deleted},
		{name: "watch sends after its token lost the service", info: watch, rules: `service "user." { read }`,
			first: &pb.WatchRequest{Service: "user.rpc"}, now: `service "order." { read }`, sent: event, code: codes.PermissionDenied,
			msg: `permission denied: the stream's token no longer allows service:read on "user.rpc" (its rights changed while the stream was open)`},
		{name: "watch forwarded by an agent sends after its token is deleted", info: watch, agent: true, rules: `service "user." { read }`,
			first: &pb.WatchRequest{Service: "user.rpc"}, sent: event, code: codes.PermissionDenied,
			msg: `permission denied: the stream's token no longer allows service:read on "user.rpc" (its rights changed while the stream was open)`},
		{name: "snapshot save sends after its token lost operator write", info: save, rules: `operator { write }`,
			first: &pb.SnapshotSaveRequest{}, now: `operator { read }`, sent: &pb.SnapshotChunk{}, code: codes.PermissionDenied,
			msg: `permission denied: the stream's token no longer allows operator:write (its rights changed while the stream was open)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			secret := "s"
			tokens := fakeResolver{HashSecret(secret): Compile(mustPolicy(t, "p", c.rules))}
			var refused []codes.Code
			ic := NewInterceptors(InterceptorConfig{Resolver: tokens, OnRefused: func(_ string, code codes.Code) { refused = append(refused, code) },
				AgentProof: func(context.Context, string) bool { return c.agent }})
			in := []proto.Message{c.first}
			if c.next != nil {
				in = append(in, c.next)
			}
			fs := &fakeStream{ctx: withToken(secret), in: in}
			err := ic.Stream(nil, fs, c.info, func(_ any, ss grpc.ServerStream) error {
				first := c.first.ProtoReflect().New().Interface()
				if err := ss.RecvMsg(first); err != nil {
					t.Fatalf("first message, with the token's rights unchanged: %v", err)
				}
				if c.now == "" {
					delete(tokens, HashSecret(secret))
				} else {
					tokens[HashSecret(secret)] = Compile(mustPolicy(t, "p", c.now))
				}
				if c.next != nil {
					ss.RecvMsg(c.next.ProtoReflect().New().Interface())
					return nil // a handler that ends quietly on a receive error
				}
				return ss.SendMsg(c.sent)
			})
			if status.Code(err) != c.code || status.Convert(err).Message() != c.msg {
				t.Fatalf("stream ended with %v, want %v %q", err, c.code, c.msg)
			}
			if len(fs.sent) != 0 {
				t.Fatalf("the stream sent %v after its token's rights were gone", fs.sent)
			}
			if len(refused) != 1 || refused[0] != c.code {
				t.Fatalf("refusals counted: %v, want one %v", refused, c.code)
			}
		})
	}
}

// TestWatchOfEveryServiceIsFilteredByTheTokensCurrentRights: a watch of
// every service, which needs no one service, goes on once its token is
// narrowed, its events filtered to what the token reads now.
func TestWatchOfEveryServiceIsFilteredByTheTokensCurrentRights(t *testing.T) {
	secret := "s"
	tokens := fakeResolver{HashSecret(secret): Compile(mustPolicy(t, "p", `service "" { read }`))}
	ic := NewInterceptors(InterceptorConfig{Resolver: tokens})
	ev := func(svc string) *pb.Event { return &pb.Event{Instance: &pb.Instance{Service: svc}} }
	sent := &pb.WatchResponse{Events: []*pb.Event{ev("user.rpc"), ev("order.rpc")}}
	fs := &fakeStream{ctx: withToken(secret), in: []proto.Message{&pb.WatchRequest{}}}
	info := &grpc.StreamServerInfo{FullMethod: pb.Registry_Watch_FullMethodName, IsServerStream: true}
	err := ic.Stream(nil, fs, info, func(_ any, ss grpc.ServerStream) error {
		if err := ss.RecvMsg(&pb.WatchRequest{}); err != nil {
			return err
		}
		if err := ss.SendMsg(sent); err != nil {
			return err
		}
		tokens[HashSecret(secret)] = Compile(mustPolicy(t, "p", `service "user." { read }`))
		return ss.SendMsg(sent)
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range fs.sent {
		var svcs []string
		for _, ev := range m.(*pb.WatchResponse).Events {
			svcs = append(svcs, ev.Instance.Service)
		}
		got = append(got, strings.Join(svcs, ","))
	}
	if strings.Join(got, " | ") != "user.rpc,order.rpc | user.rpc" {
		t.Fatalf("sent %q, want both services, then only user.rpc once the token was narrowed", got)
	}
}

// lockedResolver is a fakeResolver safe for the interceptors' goroutine
// that checks open streams again, with the change channel it signals.
type lockedResolver struct {
	mu      sync.Mutex
	tokens  fakeResolver
	changed chan struct{}
	// asked counts the calls of Changed.
	asked int
}

func (r *lockedResolver) Resolve(hash [32]byte) (Authorizer, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tokens.Resolve(hash)
}

func (r *lockedResolver) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked++
	return r.changed
}

// setAndWait is set, returning once the goroutine that checks open
// streams has checked them after the change: it asks for the next
// change's channel before it checks them, so once it asks after one
// more change, it is done with this one.
func (r *lockedResolver) setAndWait(t *testing.T, secret string, a Authorizer) {
	t.Helper()
	asked := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.asked
	}
	seen := asked()
	r.set(secret, a)
	if !testwait.Until(10*time.Second, func() bool { return asked() > seen }) {
		t.Error("the open streams were not checked after a change of the ACL state")
		return
	}
	r.set("unrelated", Compile())
	if !testwait.Until(10*time.Second, func() bool { return asked() > seen+1 }) {
		t.Error("the open streams were not checked after a change of the ACL state")
	}
}

// set gives the token of secret a (nil: deletes it) and signals the
// change, as the replica does when it applies one.
func (r *lockedResolver) set(secret string, a Authorizer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a == nil {
		delete(r.tokens, HashSecret(secret))
	} else {
		r.tokens[HashSecret(secret)] = a
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// TestIdleStreamEndsWhenItsTokenChanges: a stream that sends nothing (a
// watch of a quiet service) ends when its token is deleted or no longer
// grants it, at the change, not at its next message; a change that
// leaves its rights alone leaves it open. The goroutine that waits for
// changes ends with the last stream.
func TestIdleStreamEndsWhenItsTokenChanges(t *testing.T) {
	watch := &grpc.StreamServerInfo{FullMethod: pb.Registry_Watch_FullMethodName, IsServerStream: true}
	for _, c := range []struct {
		name string
		now  string // the token's rules after the change; "" deletes it
		code codes.Code
		msg  string
	}{
		{"token deleted", "", codes.Unauthenticated, "unauthenticated: the stream's ACL token was deleted while it was open"},
		{"token narrowed", `service "order." { read }`, codes.PermissionDenied,
			`permission denied: the stream's token no longer allows service:read on "user.rpc" (its rights changed while the stream was open)`},
	} {
		t.Run(c.name, func(t *testing.T) {
			secret := "s"
			r := &lockedResolver{tokens: fakeResolver{HashSecret(secret): Compile(mustPolicy(t, "p", `service "user." { read }`))}, changed: make(chan struct{})}
			ic := NewInterceptors(InterceptorConfig{Resolver: r, Changed: r.Changed})
			fs := &fakeStream{ctx: withToken(secret), in: []proto.Message{&pb.WatchRequest{Service: "user.rpc"}}}
			idle := make(chan struct{})
			ended := make(chan error, 1)
			go func() {
				ended <- ic.Stream(nil, fs, watch, func(_ any, ss grpc.ServerStream) error {
					if err := ss.RecvMsg(&pb.WatchRequest{}); err != nil {
						return err
					}
					close(idle)
					<-ss.Context().Done() // a quiet service: nothing to send
					return status.FromContextError(ss.Context().Err()).Err()
				})
			}()
			<-idle
			// A change that grants the same: the stream stays open.
			r.set("other", Compile())
			select {
			case err := <-ended:
				t.Fatalf("a change to another token ended the stream: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
			if c.now == "" {
				r.set(secret, nil)
			} else {
				r.set(secret, Compile(mustPolicy(t, "p", c.now)))
			}
			select {
			case err := <-ended:
				if status.Code(err) != c.code || status.Convert(err).Message() != c.msg {
					t.Fatalf("stream ended with %v, want %v %q", err, c.code, c.msg)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("an idle stream stayed open 10 s after its token changed")
			}
			testwait.For(t, 10*time.Second, "the goroutine waiting for ACL changes to end with the last stream", func() bool {
				ic.openMu.Lock()
				defer ic.openMu.Unlock()
				return !ic.watching
			})
		})
	}
}

// TestClientStreamWithItsWholeRequestIsAnsweredThroughAnACLChange: a
// client stream (a snapshot restore, a put) is ended by its token's
// deletion while the client still sends, but once its whole request has
// arrived it is a unary call in flight: a change of the ACL state, its
// own doing among them (a restore replaces the tokens, its caller's
// with them), leaves it to finish and answer.
func TestClientStreamWithItsWholeRequestIsAnsweredThroughAnACLChange(t *testing.T) {
	restore := &grpc.StreamServerInfo{FullMethod: pb.Snapshot_Restore_FullMethodName, IsClientStream: true}
	for _, c := range []struct {
		name string
		// whole: the token is deleted once the client has closed its
		// side, as a restore deletes it.
		whole    bool
		code     codes.Code
		answered bool
	}{
		{name: "token deleted while the client sends", code: codes.Unauthenticated},
		{name: "token deleted by the call itself", whole: true, code: codes.OK, answered: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			secret := "s"
			r := &lockedResolver{tokens: fakeResolver{HashSecret(secret): Compile(mustPolicy(t, "p", `acl { write }`))}, changed: make(chan struct{})}
			ic := NewInterceptors(InterceptorConfig{Resolver: r, Changed: r.Changed})
			fs := &fakeStream{ctx: withToken(secret), in: []proto.Message{&pb.SnapshotChunk{Data: []byte("a")}}}
			err := ic.Stream(nil, fs, restore, func(_ any, ss grpc.ServerStream) error {
				if err := ss.RecvMsg(&pb.SnapshotChunk{}); err != nil {
					return err
				}
				if c.whole {
					if err := ss.RecvMsg(&pb.SnapshotChunk{}); err != io.EOF {
						return fmt.Errorf("the end of the request: %v, want EOF", err)
					}
				}
				r.setAndWait(t, secret, nil)
				if err := ss.Context().Err(); err != nil {
					return status.FromContextError(err).Err()
				}
				return ss.SendMsg(&pb.SnapshotRestoreResponse{})
			})
			if status.Code(err) != c.code {
				t.Fatalf("the stream ended with %v, want %v", err, c.code)
			}
			if answered := len(fs.sent) == 1; answered != c.answered {
				t.Fatalf("the stream sent %v, want an answer: %v", fs.sent, c.answered)
			}
		})
	}
}
