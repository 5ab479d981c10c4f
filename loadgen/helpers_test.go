package loadgen

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/zrpcio/zrpc/internal/grpctest"
)

// echoFile describes grpctest's hand-written test.Echo (whose code has no
// descriptor), plus a streaming method it does not serve, as a .proto file
// would: package test, importing wrappers.proto.
func echoFile(t testing.TB) *protoregistry.Files {
	t.Helper()
	bytesValue := ".google.protobuf.BytesValue"
	fdp := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("test/echo.proto"),
		Package:    proto.String("test"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/wrappers.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Echo"),
			Method: []*descriptorpb.MethodDescriptorProto{
				{Name: proto.String("Call"), InputType: &bytesValue, OutputType: &bytesValue},
				{Name: proto.String("Watch"), InputType: &bytesValue, OutputType: &bytesValue, ServerStreaming: proto.Bool(true)},
			},
		}},
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatalf("build test/echo.proto: %v", err)
	}
	files := &protoregistry.Files{}
	for _, f := range []protoreflect.FileDescriptor{fd, wrapperspb.File_google_protobuf_wrappers_proto} {
		if err := files.RegisterFile(f); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// echoMethod returns test.Echo's method name ("Call" or "Watch").
func echoMethod(t testing.TB, name string) protoreflect.MethodDescriptor {
	t.Helper()
	d, err := echoFile(t).FindDescriptorByName(protoreflect.FullName("test.Echo." + name))
	if err != nil {
		t.Fatal(err)
	}
	return d.(protoreflect.MethodDescriptor)
}

// serveEcho starts test.Echo with handle (nil echoes) and, if reflect is
// set, reflection describing it, and returns a connection to it.
func serveEcho(t testing.TB, reflect bool, handle grpctest.EchoHandler) *grpc.ClientConn {
	t.Helper()
	addr := grpctest.Serve(t, func(s *grpc.Server) {
		grpctest.RegisterEcho(s, handle)
		if reflect {
			rpb.RegisterServerReflectionServer(s, reflection.NewServerV1(reflection.ServerOptions{
				Services: s, DescriptorResolver: echoFile(t),
			}))
		}
	})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// echoConfig is a load of n calls of test.Echo/Call by c callers on conn.
func echoConfig(t testing.TB, conn grpc.ClientConnInterface, c int, n int64) Config {
	t.Helper()
	md := echoMethod(t, "Call")
	req, err := NewRequest(md, []byte(`"aGVsbG8="`)) // a BytesValue is its bare value in JSON
	if err != nil {
		t.Fatal(err)
	}
	return Config{Conns: []grpc.ClientConnInterface{conn}, Method: md, Request: req, Concurrency: c, Requests: n}
}

// fakeClock is a clock whose sleeps return at once, moving its time to
// their end.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(ctx context.Context, stop <-chan struct{}, t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
	return true
}
