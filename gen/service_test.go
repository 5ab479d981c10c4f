package gen

import (
	"context"
	"errors"
	"go/format"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// repoRoot is the zrpc checkout these tests run in.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, ok := FindZRPCCheckout(".")
	if !ok {
		t.Fatal("not inside the zrpc module")
	}
	return root
}

// generate plans the service of proto into out, failing the test on error.
func generate(t *testing.T, proto, out string) *Plan {
	t.Helper()
	plan, err := GenerateService(context.Background(), ServiceConfig{
		Proto: proto, Out: out, Module: "example.com/echo", ZRPCReplace: repoRoot(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

func TestParseErrorsPointAtTheSource(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []string // substrings of the error
	}{
		{"syntax.proto", []string{"testdata/bad/syntax.proto:7:3: syntax error: expecting ';'"}},
		{"unknown_import.proto", []string{"testdata/bad/unknown_import.proto:5:8:", `"nowhere/missing.proto" not found in import paths`}},
		{"unknown_option.proto", []string{"testdata/bad/unknown_option.proto:8:20:", "unknown extension validate.rules"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			_, err := Parse(context.Background(), ParseConfig{File: filepath.Join("testdata/bad", tc.file)})
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if !errors.Is(err, ErrBadInput) {
				t.Errorf("error is not ErrBadInput: %v", err)
			}
			var se *SourceError
			if !errors.As(err, &se) || se.Line == 0 || se.Column == 0 {
				t.Errorf("error has no source position: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(filepath.ToSlash(err.Error()), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseFindsImportsThroughIncludePaths(t *testing.T) {
	// Without -I the import of common/money.proto resolves from the file's
	// own directory; with -I pointing elsewhere it must come from there.
	p, err := Parse(context.Background(), ParseConfig{File: "testdata/golden/proto/shop.proto", ImportPaths: []string{"testdata/golden/proto"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.OnDisk["common/money.proto"]; got != filepath.Join("testdata/golden/proto", "common/money.proto") {
		t.Errorf("common/money.proto read from %q", got)
	}
	if _, ok := p.OnDisk["google/protobuf/timestamp.proto"]; ok {
		t.Error("a well-known type was read from disk, not taken built in")
	}
	var names []string
	for _, f := range p.Files {
		names = append(names, f.GetName())
	}
	if got := strings.Join(names, " "); got != "google/protobuf/timestamp.proto google/protobuf/empty.proto common/money.proto shop.proto" {
		t.Errorf("files in dependency order = %s", got)
	}

	// A copy elsewhere finds its import only through -I.
	src, err := os.ReadFile("testdata/golden/proto/shop.proto")
	if err != nil {
		t.Fatal(err)
	}
	alone := filepath.Join(t.TempDir(), "shop.proto")
	if err := os.WriteFile(alone, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(context.Background(), ParseConfig{File: alone}); err == nil || !strings.Contains(err.Error(), `"common/money.proto" not found`) {
		t.Errorf("without -I, error = %v, want one naming common/money.proto", err)
	}
	if _, err := Parse(context.Background(), ParseConfig{File: alone, ImportPaths: []string{"testdata/golden/proto"}}); err != nil {
		t.Errorf("with -I testdata/golden/proto: %v", err)
	}
}

// TestBadInputWritesNothing: every rejected input fails before anything is
// written, with an error naming what is wrong.
func TestBadInputWritesNothing(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	blocked := filepath.Join(tmp, "blocked")
	if err := os.MkdirAll(blocked, 0o755); err != nil {
		t.Fatal(err)
	}
	// "internal" is a file, so internal/config/config.go cannot be written;
	// the check must come before any other file is.
	if err := os.WriteFile(filepath.Join(blocked, "internal"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	echo := "testdata/run/echo.proto"
	for _, tc := range []struct {
		name string
		cfg  ServiceConfig
		want string
	}{
		{"syntax error", ServiceConfig{Proto: "testdata/bad/syntax.proto", Module: "example.com/x"}, "syntax.proto:7:3"},
		{"unknown import", ServiceConfig{Proto: "testdata/bad/unknown_import.proto", Module: "example.com/x"}, "nowhere/missing.proto"},
		{"unknown option", ServiceConfig{Proto: "testdata/bad/unknown_option.proto", Module: "example.com/x"}, "unknown extension validate.rules"},
		{"two services", ServiceConfig{Proto: "testdata/bad/two_services.proto", Module: "example.com/x"}, "2 services (First, Second)"},
		{"no service", ServiceConfig{Proto: "testdata/bad/no_service.proto", Module: "example.com/x"}, "defines no service"},
		{"bad go_package name", ServiceConfig{Proto: "testdata/bad/bad_go_package.proto", Module: "example.com/x"}, `"not-a-name" is not a valid Go package name`},
		{"missing proto", ServiceConfig{Proto: "testdata/run/nope.proto", Module: "example.com/x"}, "nope.proto"},
		{"invalid module", ServiceConfig{Proto: echo, Module: "example.com//echo"}, "empty element"},
		{"module with space", ServiceConfig{Proto: echo, Module: "example.com/my echo"}, `character ' ' is not allowed`},
		{"module with a vendor element", ServiceConfig{Proto: echo, Module: "example.com/vendor"}, "element vendor"},
		{"no module", ServiceConfig{Proto: echo}, "--module"},
		{"out is a file", ServiceConfig{Proto: echo, Out: file, Module: "example.com/x"}, "is a file, not a directory"},
		{"parent is a file", ServiceConfig{Proto: echo, Out: blocked, Module: "example.com/x"}, "internal is a file"},
		{"directory below vendor inside a module", ServiceConfig{Proto: echo, Out: "testdata/vendor/never-written"}, "element vendor"},
		{"module mismatch inside a module", ServiceConfig{Proto: echo, Out: "testdata/out-never-written", Module: "example.com/x"}, "drop --module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cfg.Out == "" {
				tc.cfg.Out = filepath.Join(tmp, "out")
			}
			_, err := GenerateService(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
			if !errors.Is(err, ErrBadInput) {
				t.Errorf("not ErrBadInput: %v", err)
			}
		})
	}
	for _, dir := range []string{filepath.Join(tmp, "out"), "testdata/out-never-written", "testdata/vendor"} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created", dir)
		}
	}
	if entries, _ := os.ReadDir(blocked); len(entries) != 1 {
		t.Errorf("%s has %d entries, want only the blocking file", blocked, len(entries))
	}
}

// TestRerunKeepsEditedLogic: a re-run rewrites generated files the user
// damaged, keeps the files the user owns and changed, and says which.
func TestRerunKeepsEditedLogic(t *testing.T) {
	out := filepath.Join(t.TempDir(), "echo")
	plan := generate(t, "testdata/run/echo.proto", out)
	for _, f := range plan.Files {
		if f.Action != Create {
			t.Errorf("first run: %s %s, want created", f.Path, f.Action)
		}
	}
	if err := plan.Write(); err != nil {
		t.Fatal(err)
	}
	logic := filepath.Join(out, "internal/logic/saylogic.go")
	edited := []byte("package logic\n\n// edited by hand\n")
	if err := os.WriteFile(logic, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	server := filepath.Join(out, "internal/server/echoserver.go")
	if err := os.WriteFile(server, []byte("package server\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(out, "internal/logic/chatlogic.go")); err != nil {
		t.Fatal(err)
	}

	plan = generate(t, "testdata/run/echo.proto", out)
	want := map[string]Action{
		"internal/logic/saylogic.go":     Keep,
		"internal/logic/chatlogic.go":    Create,
		"internal/server/echoserver.go":  Overwrite,
		"main.go":                        Unchanged, // the user's, never changed: gen's still
		"etc/echo.yaml":                  Unchanged,
		"internal/config/config.go":      Unchanged,
		"internal/svc/servicecontext.go": Unchanged,
		"echopb/echo.pb.go":              Unchanged,
		"echopb/echo_grpc.pb.go":         Unchanged,
		"echoclient/echo.go":             Unchanged,
	}
	for _, f := range plan.Files {
		if a, ok := want[f.Path]; ok && f.Action != a {
			t.Errorf("second run: %s %s, want %s", f.Path, f.Action, a)
		}
		delete(want, f.Path)
	}
	for p := range want {
		t.Errorf("second run has no %s", p)
	}
	if err := plan.Write(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(logic); string(got) != string(edited) {
		t.Errorf("edited logic file was overwritten:\n%s", got)
	}
	if got, _ := os.ReadFile(server); !strings.Contains(string(got), "NewEchoServer") {
		t.Errorf("server glue was not regenerated:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(out, "internal/logic/chatlogic.go")); err != nil {
		t.Errorf("deleted logic file was not generated again: %v", err)
	}
}

// TestGeneratedGoIsFormatted: every generated Go file is gofmt'd.
func TestGeneratedGoIsFormatted(t *testing.T) {
	plan := generate(t, "testdata/run/echo.proto", filepath.Join(t.TempDir(), "echo"))
	n := 0
	for _, f := range plan.Files {
		if !strings.HasSuffix(f.Path, ".go") {
			continue
		}
		n++
		src, err := format.Source(f.Content)
		if err != nil {
			t.Errorf("%s: %v", f.Path, err)
		} else if string(src) != string(f.Content) {
			t.Errorf("%s is not gofmt'd", f.Path)
		}
	}
	if n < 10 {
		t.Errorf("only %d Go files generated", n)
	}
}

func TestNewModuleRequiresThisRepositorysVersions(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(gomod), "\ngo "+GoVersion+"\n") {
		t.Errorf("zrpc's go.mod has another go version than %s", GoVersion)
	}
	for _, r := range [][2]string{{"google.golang.org/grpc", GRPCVersion}, {"google.golang.org/protobuf", ProtobufVersion}} {
		found := false
		for _, req := range requirements(gomod) {
			if req[0] == r[0] {
				found = true
				if req[1] != r[1] {
					t.Errorf("gen requires %s %s, zrpc's go.mod %s", r[0], r[1], req[1])
				}
			}
		}
		if !found {
			t.Errorf("zrpc's go.mod does not require %s", r[0])
		}
	}
}

func TestStarterProtoGeneratesAService(t *testing.T) {
	src, err := StarterProto("user_profile")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	proto := filepath.Join(dir, "user_profile.proto")
	if err := os.WriteFile(proto, src, 0o644); err != nil {
		t.Fatal(err)
	}
	plan, err := GenerateService(context.Background(), ServiceConfig{Proto: proto, Out: filepath.Join(dir, "svc"), Module: "example.com/svc"})
	if err != nil {
		t.Fatalf("generate the starter: %v\n%s", err, src)
	}
	if plan.Registry != "user_profile.rpc" {
		t.Errorf("registers as %q", plan.Registry)
	}
	// Names that cannot be a Go package's or its directory's get a
	// starter that generates all the same.
	for _, name := range []string{"func", "main", "init", "internal", "cmd", "etc"} {
		src, err := StarterProto(name)
		if err != nil {
			t.Fatalf("StarterProto(%q): %v", name, err)
		}
		proto := filepath.Join(dir, name+".proto")
		if err := os.WriteFile(proto, src, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := GenerateService(context.Background(), ServiceConfig{Proto: proto, Out: filepath.Join(dir, name), Module: "example.com/" + name}); err != nil {
			t.Errorf("generate the starter of %q: %v\n%s", name, err, src)
		}
	}
	for _, bad := range []string{"", "User", "1user", "user-x", "user.proto", "vendor"} {
		if _, err := StarterProto(bad); !errors.Is(err, ErrBadInput) {
			t.Errorf("StarterProto(%q) = %v, want ErrBadInput", bad, err)
		}
	}
}

func TestClientListsMethodsMarkedIdempotent(t *testing.T) {
	dir := t.TempDir()
	proto := filepath.Join(dir, "kv.proto")
	src := `syntax = "proto3";
package kv.v1;
option go_package = "example.com/kv/kv";
message Key { string key = 1; }
message Value { bytes value = 1; }
service Store {
  rpc Get(Key) returns (Value) { option idempotency_level = NO_SIDE_EFFECTS; }
  rpc Put(Value) returns (Value) { option idempotency_level = IDEMPOTENT; }
  rpc Append(Value) returns (Value);
}
`
	if err := os.WriteFile(proto, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	plan, err := GenerateService(context.Background(), ServiceConfig{Proto: proto, Out: filepath.Join(dir, "svc"), Module: "example.com/kv"})
	if err != nil {
		t.Fatal(err)
	}
	var client string
	for _, f := range plan.Files {
		if strings.HasSuffix(f.Path, "kvclient/store.go") {
			client = string(f.Content)
		}
	}
	if client == "" {
		t.Fatalf("no kvclient/store.go in the plan")
	}
	want := "var IdempotentMethods = []string{\n\t\"/kv.v1.Store/Get\",\n\t\"/kv.v1.Store/Put\",\n}"
	if !strings.Contains(client, want) {
		t.Errorf("client does not declare\n%s\ngot:\n%s", want, client)
	}
	if !strings.Contains(client, "rpc.WithIdempotent(IdempotentMethods...)") {
		t.Error("Dial does not pass IdempotentMethods to the retry stage")
	}
	if !strings.Contains(client, "rpc.DialConfig(ctx, c, append([]rpc.DialOption{rpc.WithIdempotent(IdempotentMethods...)}, opts...)...)") {
		t.Error("DialConfig does not hand the config (its Hedging included) and IdempotentMethods to rpc.DialConfig")
	}
}
