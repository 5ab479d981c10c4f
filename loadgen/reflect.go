package loadgen

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// ErrNoReflection is returned by Reflect when the server does not serve
// gRPC reflection (grpc.reflection.v1).
var ErrNoReflection = errors.New("the server does not serve gRPC reflection (grpc.reflection.v1)")

// Reflect asks the server behind conn, through its reflection service
// (grpc.reflection.v1), which services it serves and returns their
// descriptors, built from the .proto files the server sends (those that
// declare the services and everything they import).
func Reflect(ctx context.Context, conn grpc.ClientConnInterface) ([]protoreflect.ServiceDescriptor, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, reflectError(err)
	}
	ask := func(req *rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error) {
		if err := stream.Send(req); err != nil {
			_, err = stream.Recv() // Send's io.EOF hides the stream's status
			return nil, reflectError(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, reflectError(err)
		}
		if e := resp.GetErrorResponse(); e != nil {
			return nil, &answerError{status.New(codes.Code(e.GetErrorCode()), e.GetErrorMessage()).Err()}
		}
		return resp, nil
	}

	resp, err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
	if err != nil {
		return nil, err
	}
	files := map[string]*descriptorpb.FileDescriptorProto{}
	add := func(resp *rpb.ServerReflectionResponse) error {
		for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(b, fd); err != nil {
				return fmt.Errorf("server reflection: decode a file descriptor: %w", err)
			}
			files[fd.GetName()] = fd
		}
		return nil
	}
	var names []protoreflect.FullName
	for _, s := range resp.GetListServicesResponse().GetService() {
		resp, err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: s.GetName()}})
		var answer *answerError
		if errors.As(err, &answer) {
			continue // served without a descriptor (hand-written): not callable from here
		}
		if err != nil {
			return nil, fmt.Errorf("describe service %s: %w", s.GetName(), err)
		}
		names = append(names, protoreflect.FullName(s.GetName()))
		if err := add(resp); err != nil {
			return nil, err
		}
	}
	// A server sends each file once per stream: ask for imports it left out.
	for missing := missingImports(files); len(missing) > 0; missing = missingImports(files) {
		for _, name := range missing {
			if files[name] != nil {
				continue // sent with an earlier one
			}
			resp, err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: name}})
			if err != nil {
				return nil, fmt.Errorf("fetch %s: %w", name, err)
			}
			if err := add(resp); err != nil {
				return nil, err
			}
			if files[name] == nil {
				return nil, fmt.Errorf("server reflection: asked for %s, got other files", name)
			}
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range files {
		set.File = append(set.File, fd)
	}
	reg, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("server reflection: build the descriptors: %w", err)
	}
	var services []protoreflect.ServiceDescriptor
	for _, name := range names {
		d, err := reg.FindDescriptorByName(name)
		if err != nil {
			return nil, fmt.Errorf("server reflection: service %s: %w", name, err)
		}
		s, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("server reflection: %s is not a service", name)
		}
		services = append(services, s)
	}
	return services, nil
}

// missingImports returns the files imported by files but not among them.
func missingImports(files map[string]*descriptorpb.FileDescriptorProto) []string {
	var missing []string
	for _, fd := range files {
		for _, dep := range fd.GetDependency() {
			if files[dep] == nil {
				missing = append(missing, dep)
			}
		}
	}
	return missing
}

// answerError is an error the reflection service answered with.
type answerError struct{ err error }

func (e *answerError) Error() string { return "server reflection: " + e.err.Error() }

func (e *answerError) Unwrap() error { return e.err }

func reflectError(err error) error {
	if status.Code(err) == codes.Unimplemented {
		return fmt.Errorf("%w: %v", ErrNoReflection, err)
	}
	return fmt.Errorf("server reflection: %w", err)
}
