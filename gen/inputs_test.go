package gen

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// writeProtos writes name → content under a new directory and returns it.
func writeProtos(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestProtosWhoseGoCannotBuildAreRefused: a .proto whose Go code would not
// compile, or would go where it must not, fails before anything is planned,
// with an error naming the .proto file, the line, and what to change.
func TestProtosWhoseGoCannotBuildAreRefused(t *testing.T) {
	const msgs = "message Req { string a = 1; }\n"
	const svc = "service Base { rpc Get(Req) returns (Req); }\n"
	long := strings.Repeat("A", 250)
	for _, tc := range []struct {
		name  string
		proto string
		want  []string
	}{
		{"go_package climbing out of the service", "syntax = \"proto3\";\npackage esc;\noption go_package = \"example.com/svc/a/../../../../pwned;esc\";\n" + msgs + svc,
			[]string{"in.proto:3:", "outside a subdirectory of the service"}},
		{"go_package with a space", "syntax = \"proto3\";\npackage sp;\noption go_package = \"./a b\";\n" + msgs + svc,
			[]string{"in.proto:3:", `character ' ' is not allowed`}},
		{"go_package not ASCII", "syntax = \"proto3\";\npackage uni;\noption go_package = \"./héllo\";\n" + msgs + svc,
			[]string{"in.proto:3:", `character 'é' is not allowed`}},
		{"package a Go keyword", "syntax = \"proto3\";\npackage func;\n" + msgs + svc,
			[]string{"in.proto:2:", `Go package name "func"`, "go_package"}},
		{"package main", "syntax = \"proto3\";\npackage main;\n" + msgs + svc,
			[]string{"in.proto:2:", `Go package name "main"`}},
		{"go_package named init", "syntax = \"proto3\";\npackage x;\noption go_package = \"./x;init\";\n" + msgs + svc,
			[]string{"in.proto:3:", `cannot be named "init"`}},
		{"go_package in a vendor directory", "syntax = \"proto3\";\npackage v;\noption go_package = \"./vendor/vpb\";\n" + msgs + svc,
			[]string{"in.proto:3:", "element vendor"}},
		{"package vendor without go_package", "syntax = \"proto3\";\npackage vendor;\n" + msgs + svc,
			[]string{"in.proto:2:", "element vendor", `option go_package = "./vendorpb";`}},
		{"go_package below an internal directory", "syntax = \"proto3\";\npackage i;\noption go_package = \"./api/internal/ipb\";\n" + msgs + svc,
			[]string{"in.proto:3:", "internal/ directory"}},
		{"go_package in the client's directory", "syntax = \"proto3\";\npackage cd;\noption go_package = \"./cdclient\";\n" + msgs + svc,
			[]string{"in.proto:3:", "where the generated client package goes"}},
		{"messages foo_bar and FooBar", "syntax = \"proto3\";\npackage c;\noption go_package = \"./cpb\";\nmessage foo_bar {}\nmessage FooBar {}\nservice Base { rpc Get(FooBar) returns (foo_bar); }\n",
			[]string{"message c.foo_bar (", "in.proto:4:1) and message c.FooBar (", "in.proto:5:1) both become the Go name FooBar"}},
		{"nested message and its flat twin", "syntax = \"proto3\";\npackage c;\noption go_package = \"./cpb\";\nmessage Foo { message Bar {} }\nmessage Foo_Bar {}\nservice Base { rpc Get(Foo) returns (Foo); }\n",
			[]string{"message c.Foo.Bar (", "message c.Foo_Bar (", "Go name Foo_Bar"}},
		{"message named like the gRPC client", "syntax = \"proto3\";\npackage c;\noption go_package = \"./cpb\";\n" + msgs + "message BaseClient {}\n" + svc,
			[]string{"message c.BaseClient (", "in.proto:5:1) and service c.Base (", "Go name BaseClient"}},
		{"methods Foo and NewFoo", "syntax = \"proto3\";\npackage c;\noption go_package = \"./cpb\";\n" + msgs + "service Base { rpc Foo(Req) returns (Req); rpc NewFoo(Req) returns (Req); }\n",
			[]string{"method c.Base.Foo (", "method c.Base.NewFoo (", "Go name NewFooLogic"}},
		{"methods get_it and GetIt", "syntax = \"proto3\";\npackage c;\noption go_package = \"./cpb\";\n" + msgs + "service Base {\n  rpc get_it(Req) returns (Req);\n  rpc GetIt(Req) returns (Req);\n}\n",
			[]string{"methods get_it (", "in.proto:6:3) and GetIt (", "in.proto:7:3) would share the logic file getitlogic.go"}},
		{"method name too long for a file name", "syntax = \"proto3\";\npackage c;\noption go_package = \"./cpb\";\n" + msgs + "service Base { rpc " + long + "(Req) returns (Req); }\n",
			[]string{"logic.go: its name is 258 bytes long", "shorten"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeProtos(t, map[string]string{"in.proto": tc.proto})
			out := filepath.Join(dir, "svc")
			plan, err := GenerateService(context.Background(), ServiceConfig{Proto: filepath.Join(dir, "in.proto"), Out: out, Module: "example.com/svc"})
			if err == nil {
				for _, f := range plan.Files {
					if p := path.Clean(f.Path); p == ".." || strings.HasPrefix(p, "../") {
						t.Errorf("planned a file outside the output directory: %s", f.Path)
					}
				}
				t.Fatal("GenerateService succeeded")
			}
			if !errors.Is(err, ErrBadInput) {
				t.Errorf("not ErrBadInput: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestImportedFilesSharingADirectoryNeedOnePackageName: two .proto files
// whose go_package puts them in one directory under two package names are
// refused, naming both.
func TestImportedFilesSharingADirectoryNeedOnePackageName(t *testing.T) {
	dir := writeProtos(t, map[string]string{
		"inc/a.proto": "syntax = \"proto3\";\npackage a;\noption go_package = \"./x;foo\";\nmessage A {}\n",
		"svc.proto":   "syntax = \"proto3\";\npackage s;\nimport \"inc/a.proto\";\noption go_package = \"./x;bar\";\nservice Base { rpc Get(a.A) returns (a.A); }\n",
	})
	_, err := GenerateService(context.Background(), ServiceConfig{Proto: filepath.Join(dir, "svc.proto"), Out: filepath.Join(dir, "svc"), Module: "example.com/svc"})
	if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), "inc/a.proto") || !strings.Contains(err.Error(), "same package name") {
		t.Fatalf("error = %v, want ErrBadInput naming inc/a.proto", err)
	}
}

// TestImportedFileOfTheSameNameInTheSamePackage: a .proto that imports
// another of the same file name whose code goes in the same Go package
// (model/user.proto beside user.proto, one proto package) is refused,
// naming both files, not reported as a bug of gen.
func TestImportedFileOfTheSameNameInTheSamePackage(t *testing.T) {
	dir := writeProtos(t, map[string]string{
		"model/user.proto": "syntax = \"proto3\";\npackage user;\nmessage User { string id = 1; }\n",
		"user.proto":       "syntax = \"proto3\";\npackage user;\nimport \"model/user.proto\";\nmessage Req {}\nservice Users { rpc Get(Req) returns (User); }\n",
	})
	_, err := GenerateService(context.Background(), ServiceConfig{Proto: filepath.Join(dir, "user.proto"), Out: filepath.Join(dir, "svc"), Module: "example.com/svc"})
	if !errors.Is(err, ErrBadInput) {
		t.Fatalf("error = %v, want ErrBadInput", err)
	}
	for _, want := range []string{filepath.Join(dir, "model/user.proto"), filepath.Join(dir, "user.proto") + " would both be generated as user/user.pb.go", "rename one"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

// snapshotTree returns every path under dir with its content ("" for
// directories).
func snapshotTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			tree[p] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		tree[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func sameTree(t *testing.T, dir string, before map[string]string) {
	t.Helper()
	after := snapshotTree(t, dir)
	for p, c := range after {
		if b, ok := before[p]; !ok {
			t.Errorf("failed Write left %s behind", p)
		} else if b != c {
			t.Errorf("failed Write changed %s", p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("failed Write removed %s", p)
		}
	}
}

// TestFailedWriteLeavesTheDirectoryAsItWas: when Write fails part way (a
// directory it needs is taken by a file made after the plan), no file of
// the plan is in place and no directory it made is left.
func TestFailedWriteLeavesTheDirectoryAsItWas(t *testing.T) {
	out := filepath.Join(t.TempDir(), "echo")
	if err := os.MkdirAll(filepath.Join(out, "internal"), 0o755); err != nil {
		t.Fatal(err)
	}
	plan := generate(t, "testdata/run/echo.proto", out)
	// The logic files come after main, config, svc, server and the
	// messages in the plan: their directory is now a file.
	if err := os.WriteFile(filepath.Join(out, "internal/logic"), []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshotTree(t, out)
	if err := plan.Write(); err == nil {
		t.Fatal("Write succeeded with internal/logic a file")
	}
	sameTree(t, out, before)
}

// TestWriteKeepsAFileMadeAfterThePlan: a file the plan would create that
// someone wrote in the meantime (the user's logic) is not overwritten, and
// nothing else is written.
func TestWriteKeepsAFileMadeAfterThePlan(t *testing.T) {
	out := filepath.Join(t.TempDir(), "echo")
	plan := generate(t, "testdata/run/echo.proto", out)
	logic := filepath.Join(out, "internal/logic/saylogic.go")
	if err := os.MkdirAll(filepath.Dir(logic), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logic, []byte("package logic // mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshotTree(t, out)
	err := plan.Write()
	if err == nil || !strings.Contains(err.Error(), "not overwritten") {
		t.Fatalf("Write = %v, want an error saying saylogic.go was not overwritten", err)
	}
	sameTree(t, out, before)
}

// TestGivenFileIsCompiledNotItsNamesake: when an import path holds another
// file of the same import name as the file given, found before it, the
// file given is the one compiled.
func TestGivenFileIsCompiledNotItsNamesake(t *testing.T) {
	dir := writeProtos(t, map[string]string{
		"x.proto":     "syntax = \"proto3\";\npackage given;\n",
		"inc/x.proto": "syntax = \"proto3\";\npackage namesake;\n",
	})
	given := filepath.Join(dir, "x.proto")
	for _, paths := range [][]string{{filepath.Join(dir, "inc")}, {filepath.Join(dir, "inc"), dir}} {
		p, err := Parse(context.Background(), ParseConfig{File: given, ImportPaths: paths})
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Desc.Package(); got != "given" {
			t.Errorf("-I %v: compiled package %s, want given", paths, got)
		}
		if got := p.OnDisk["x.proto"]; got != given {
			t.Errorf("-I %v: x.proto read from %s, want %s", paths, got, given)
		}
	}
}

// TestUnusualProtosBuild: a service in edition 2023 with a Go keyword and
// Go-looking names for methods, streaming methods on well-known types, and
// messages of an imported proto2 file (required fields, a group,
// extensions, no go_package) generates a module that builds and vets.
func TestUnusualProtosBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a generated module")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	dir := writeProtos(t, map[string]string{
		"legacy/old.proto": `syntax = "proto2";
package legacy.v1;
message Old {
  required string id = 1;
  optional group Extra = 2 { optional int32 n = 3; }
  extensions 100 to 199;
}
extend Old { optional string note = 100; }
`,
		"svc.proto": `edition = "2023";
package type.v1;
import "legacy/old.proto";
import "google/protobuf/empty.proto";
option go_package = "./typepb";
message Func { string range = 1; oneof kind { string go = 2; int32 chan = 3; } }
service Select {
  rpc Default(legacy.v1.Old) returns (Func);
  rpc Switch(stream google.protobuf.Empty) returns (stream google.protobuf.Empty);
  rpc Case(Func) returns (stream legacy.v1.Old);
}
`,
	})
	out := filepath.Join(dir, "svc")
	plan, err := GenerateService(context.Background(), ServiceConfig{
		Proto: filepath.Join(dir, "svc.proto"), Out: out, Module: "example.com/svc", ZRPCReplace: repoRoot(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(); err != nil {
		t.Fatal(err)
	}
	goRun(t, goBin, out, "vet", "./...")
}

// TestPackagesNamedLikeTheSkeletonsVariablesBuild: message packages whose
// Go names are those of variables in the skeleton's functions (a service
// in package log, its request in package client) generate a module that
// builds and vets: the skeleton imports them under other names.
func TestPackagesNamedLikeTheSkeletonsVariablesBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a generated module")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command")
	}
	dir := writeProtos(t, map[string]string{
		"client/types.proto": "syntax = \"proto3\";\npackage client;\nmessage Req { string a = 1; }\n",
		"log.proto": `syntax = "proto3";
package log.v1;
import "client/types.proto";
message Entry { string line = 1; }
service Log {
  rpc Write(client.Req) returns (Entry);
  rpc Tail(client.Req) returns (stream Entry);
}
`,
	})
	out := filepath.Join(dir, "svc")
	plan, err := GenerateService(context.Background(), ServiceConfig{
		Proto: filepath.Join(dir, "log.proto"), Out: out, Module: "example.com/svc", ZRPCReplace: repoRoot(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(); err != nil {
		t.Fatal(err)
	}
	goRun(t, goBin, out, "vet", "./...")
}
