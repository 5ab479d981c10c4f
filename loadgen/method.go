package loadgen

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// ErrUnknownMethod is returned by FindMethod when no service offers the
// method asked for (or several do).
var ErrUnknownMethod = errors.New("unknown method")

// reflectionPrefix names the reflection services, which FindMethod never
// offers.
const reflectionPrefix = "grpc.reflection."

// FindMethod returns the method name designates among services' methods.
// name is "pkg.Service/Method", "Service/Method" or, when the part before
// the slash names no service (a zrpc service name such as
// "user.rpc/GetUser"), any service's method of that name, as long as only
// one service has it. A leading slash is allowed. The error, wrapping
// ErrUnknownMethod, lists the methods there are.
func FindMethod(services []protoreflect.ServiceDescriptor, name string) (protoreflect.MethodDescriptor, error) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(name, "/"), "/")
	if !ok || svc == "" || method == "" || strings.Contains(method, "/") {
		return nil, fmt.Errorf("method %q: want pkg.Service/Method or Service/Method", name)
	}
	services = slices.DeleteFunc(slices.Clone(services), func(s protoreflect.ServiceDescriptor) bool {
		return strings.HasPrefix(string(s.FullName()), reflectionPrefix)
	})
	candidates := matching(services, func(s protoreflect.ServiceDescriptor) bool { return string(s.FullName()) == svc })
	if len(candidates) == 0 {
		candidates = matching(services, func(s protoreflect.ServiceDescriptor) bool { return string(s.Name()) == svc })
	}
	if len(candidates) == 0 {
		candidates = services
	}
	var found []protoreflect.MethodDescriptor
	for _, s := range candidates {
		if m := s.Methods().ByName(protoreflect.Name(method)); m != nil {
			found = append(found, m)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, fmt.Errorf("%w %q; the server has:\n  %s", ErrUnknownMethod, name, strings.Join(methodNames(services), "\n  "))
	}
	return nil, fmt.Errorf("%w %q: more than one service has it, name one of:\n  %s", ErrUnknownMethod, name, strings.Join(methodNames(nil, found...), "\n  "))
}

func matching(services []protoreflect.ServiceDescriptor, keep func(protoreflect.ServiceDescriptor) bool) []protoreflect.ServiceDescriptor {
	var out []protoreflect.ServiceDescriptor
	for _, s := range services {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// methodNames lists the methods of services, and methods, as
// "pkg.Service/Method", sorted.
func methodNames(services []protoreflect.ServiceDescriptor, methods ...protoreflect.MethodDescriptor) []string {
	var names []string
	for _, s := range services {
		for i := range s.Methods().Len() {
			methods = append(methods, s.Methods().Get(i))
		}
	}
	for _, m := range methods {
		names = append(names, strings.TrimPrefix(FullMethod(m), "/"))
	}
	if len(names) == 0 {
		return []string{"(no services)"}
	}
	slices.Sort(names)
	return names
}

// NewRequest returns md's request message decoded from JSON (protojson:
// field names as in the .proto or in lowerCamelCase). Empty JSON means an
// empty message.
func NewRequest(md protoreflect.MethodDescriptor, json []byte) (proto.Message, error) {
	msg := dynamicpb.NewMessage(md.Input())
	if len(strings.TrimSpace(string(json))) == 0 {
		return msg, nil
	}
	if err := protojson.Unmarshal(json, msg); err != nil {
		return nil, fmt.Errorf("request of %s is a %s: %w", md.FullName(), md.Input().FullName(), err)
	}
	return msg, nil
}
