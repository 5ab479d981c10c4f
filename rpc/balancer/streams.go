package balancer

import (
	"maps"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// streamMethodsCap bounds how many method names a [streamMethods] keeps:
// generated clients call a fixed set of methods, but a client building
// names at run time must not grow the map without end. Past the cap,
// names not kept are looked up in the registry on every pick.
const streamMethodsCap = 4096

// streamMethods tells which RPCs are streams, for [P2CEWMA]: grpc's
// balancer.PickInfo gives a pick's full method name but not whether the
// call is unary or a stream (grpc makes a unary call a stream too). The
// answer comes from the method's protobuf descriptor in
// protoregistry.GlobalFiles, where every generated .pb.go registers its
// file when its package is imported, so every method a generated client
// calls is there: a method streaming requests, replies or both is a
// stream. A method not in the registry (a non-protobuf codec, descriptors
// built at run time, as `zrpcctl bench` does for its unary calls) counts
// as unary.
//
// Answers are kept per method in a map that picks read without a lock
// and that a pick of a method not seen before replaces with a copy
// holding one more entry (under mu): a ClientConn calls few methods, so
// the copies stop early.
type streamMethods struct {
	known atomic.Pointer[map[string]bool] // full method name → stream
	mu    sync.Mutex                      // serialises copies of known
}

// stream reports whether fullMethod ("/pkg.Service/Method") is a
// streaming RPC. Safe for concurrent use; allocates nothing for a method
// it has answered before.
func (s *streamMethods) stream(fullMethod string) bool {
	if m := s.known.Load(); m != nil {
		if stream, ok := (*m)[fullMethod]; ok {
			return stream
		}
	}
	stream := isStreamMethod(fullMethod)
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]bool{fullMethod: stream}
	if old := s.known.Load(); old != nil {
		if len(*old) >= streamMethodsCap {
			return stream
		}
		maps.Copy(m, *old)
	}
	s.known.Store(&m)
	return stream
}

// isStreamMethod looks fullMethod up in protoregistry.GlobalFiles; false
// for a name that is not a method there.
func isStreamMethod(fullMethod string) bool {
	service, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		return false
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return false
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	return md != nil && (md.IsStreamingClient() || md.IsStreamingServer())
}
