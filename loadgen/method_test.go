package loadgen

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// echoServices is test.Echo's descriptor.
func echoServices(t *testing.T) []protoreflect.ServiceDescriptor {
	return []protoreflect.ServiceDescriptor{echoMethod(t, "Call").Parent().(protoreflect.ServiceDescriptor)}
}

func TestFindMethodAcceptsEveryForm(t *testing.T) {
	for _, name := range []string{"test.Echo/Call", "/test.Echo/Call", "Echo/Call", "echo.rpc/Call"} {
		m, err := FindMethod(echoServices(t), name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.FullName() != "test.Echo.Call" {
			t.Fatalf("%s found %s", name, m.FullName())
		}
	}
}

func TestFindMethodListsTheMethodsWhenTheNameIsWrong(t *testing.T) {
	for _, name := range []string{"test.Echo/Cal", "Echo/Nope", "user.rpc/GetUser"} {
		_, err := FindMethod(echoServices(t), name)
		if !errors.Is(err, ErrUnknownMethod) {
			t.Fatalf("%s: error %v, want ErrUnknownMethod", name, err)
		}
		if !strings.Contains(err.Error(), "test.Echo/Call") || !strings.Contains(err.Error(), "test.Echo/Watch") {
			t.Fatalf("%s: error %q does not list the methods", name, err)
		}
	}
	for _, name := range []string{"Call", "test.Echo/", "/Call", "a/b/c", ""} {
		_, err := FindMethod(echoServices(t), name)
		if err == nil || !strings.Contains(err.Error(), "want pkg.Service/Method or Service/Method") {
			t.Fatalf("%q: error %v, want the forms a method is named in", name, err)
		}
	}
}

func TestNewRequestNamesTheMessageAndTheProblem(t *testing.T) {
	md := echoMethod(t, "Call")
	if _, err := NewRequest(md, []byte(`{"nope":1}`)); err == nil || !strings.Contains(err.Error(), "google.protobuf.BytesValue") {
		t.Fatalf("error %v, want one naming the request's type", err)
	}
	msg, err := NewRequest(md, []byte("  \n"))
	if err != nil {
		t.Fatal(err)
	}
	if msg.ProtoReflect().Descriptor().FullName() != "google.protobuf.BytesValue" {
		t.Fatalf("empty data gave a %s", msg.ProtoReflect().Descriptor().FullName())
	}
}

func TestReflectFindsTheServicesAndRunCallsThem(t *testing.T) {
	conn := serveEcho(t, true, nil)
	services, err := Reflect(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	m, err := FindMethod(services, "Echo/Call")
	if err != nil {
		t.Fatal(err)
	}
	// A descriptor from the wire: the request is built from it, not from
	// generated code.
	req, err := NewRequest(m, []byte(`"cGluZw=="`))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), Config{Conns: []grpc.ClientConnInterface{conn}, Method: m, Request: req, Concurrency: 2, Requests: 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.Codes[codes.OK] != 20 {
		t.Fatalf("codes %v, want 20 OK", res.Codes)
	}
	if _, err := FindMethod(services, "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"); err == nil {
		t.Fatal("the reflection service is offered as a method to load")
	}
}

func TestReflectSaysWhenTheServerHasNoReflection(t *testing.T) {
	conn := serveEcho(t, false, nil)
	_, err := Reflect(t.Context(), conn)
	if !errors.Is(err, ErrNoReflection) {
		t.Fatalf("error %v, want ErrNoReflection", err)
	}
}
