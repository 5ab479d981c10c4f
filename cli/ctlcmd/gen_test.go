package ctlcmd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zrpcio/zrpc/gen"
)

// TestGen runs the flow through the command line: a starter
// proto, a service from it, a re-run that keeps the user's files, and a
// dry run that writes nothing.
func TestGen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	res := runZrpcctl(ctx, t, "", "gen", "proto", "user", "--dir", dir)
	proto := filepath.Join(dir, "user.proto")
	if res.err != nil || !strings.Contains(res.stdout, "created  "+proto) {
		t.Fatalf("gen proto: %v\n%s", res.err, res.stdout)
	}
	if res := runZrpcctl(ctx, t, "", "gen", "proto", "user", "--dir", dir); res.err == nil || !strings.Contains(res.err.Error(), "exists; not overwritten") {
		t.Errorf("gen proto over an existing file: %v", res.err)
	}

	out := filepath.Join(dir, "user")
	res = runZrpcctl(ctx, t, "", "gen", "rpc", proto, "--out", out, "--module", "example.com/user")
	if res.err != nil {
		t.Fatalf("gen rpc: %v\n%s", res.err, res.stderr)
	}
	for _, want := range []string{
		"created    " + filepath.Join(out, "user/user.pb.go"),
		"created    " + filepath.Join(out, "internal/logic/pinglogic.go"),
		"created    " + filepath.Join(out, "go.mod"),
		"go.mod replaces github.com/zrpcio/zrpc with ", // found from the working directory, this checkout
		"registers as user.rpc",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("gen rpc output lacks %q:\n%s", want, res.stdout)
		}
	}

	logic := filepath.Join(out, "internal/logic/pinglogic.go")
	if err := os.WriteFile(logic, []byte("package logic\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res = runZrpcctl(ctx, t, "", "gen", "rpc", proto, "--out", out)
	if res.err != nil {
		t.Fatalf("gen rpc again: %v", res.err)
	}
	for _, want := range []string{
		"kept       " + logic + " (yours: gen never overwrites it)",
		"unchanged  " + filepath.Join(out, "user/user_grpc.pb.go"),
		"file(s) kept as they were",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("second gen rpc output lacks %q:\n%s", want, res.stdout)
		}
	}
	if got, _ := os.ReadFile(logic); string(got) != "package logic\n" {
		t.Errorf("the edited logic file was overwritten")
	}

	dry := filepath.Join(dir, "dry")
	res = runZrpcctl(ctx, t, "", "gen", "rpc", proto, "--out", dry, "--module", "example.com/dry", "--dry-run")
	if res.err != nil || !strings.Contains(res.stdout, "would be created "+filepath.Join(dry, "main.go")) {
		t.Errorf("dry run: %v\n%s", res.err, res.stdout)
	}
	if _, err := os.Stat(dry); !os.IsNotExist(err) {
		t.Errorf("the dry run created %s", dry)
	}
}

// TestGenOutsideACheckoutSaysHowToBuild: run outside a zrpc checkout,
// gen rpc writes a go.mod that needs a replace before it builds, and the
// next step it prints includes it.
func TestGenOutsideACheckoutSaysHowToBuild(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	proto := filepath.Join(dir, "user.proto")
	if res := runZrpcctl(context.Background(), t, "", "gen", "proto", "user", "--dir", dir); res.err != nil {
		t.Fatal(res.err)
	}
	out := filepath.Join(dir, "user")
	res := runZrpcctl(context.Background(), t, "", "gen", "rpc", proto, "--out", out, "--module", "example.com/user")
	if res.err != nil {
		t.Fatalf("gen rpc: %v\n%s", res.err, res.stderr)
	}
	want := "next: cd " + out + " && go mod edit -replace github.com/zrpcio/zrpc=/path/to/zrpc && go mod tidy && go run . -f etc/user.yaml"
	if !strings.Contains(res.stdout, want) {
		t.Errorf("gen rpc outside a checkout prints no next step that builds; want %q in:\n%s", want, res.stdout)
	}
}

func TestGenInputErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.proto")
	if err := os.WriteFile(bad, []byte("syntax = \"proto3\";\nmessage {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no out", []string{"gen", "rpc", bad}, `required flag(s) "out" not set`},
		{"syntax error", []string{"gen", "rpc", bad, "--out", filepath.Join(dir, "o"), "--module", "example.com/o"}, bad + ":2:9: syntax error"},
		{"bad starter name", []string{"gen", "proto", "User-Service", "--dir", dir}, `service name "User-Service"`},
		{"no name", []string{"gen", "proto"}, "accepts 1 arg(s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := runZrpcctl(context.Background(), t, "", tc.args...)
			if res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", res.err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "o")); !os.IsNotExist(err) {
		t.Error("a failed gen rpc created its output directory")
	}
}

// TestGenSaysWhichOldFilesItLeft: a file an earlier run wrote that gen
// no longer writes, and leaves because it was changed since, is listed
// as left, saying why and what to do.
func TestGenSaysWhichOldFilesItLeft(t *testing.T) {
	var out strings.Builder
	printPlan(&out, &gen.Plan{Out: "svc", Files: []gen.PlannedFile{
		{Path: "cmd/oldclient/main.go", Action: gen.Orphan},
		{Path: "oldclient/old.go", Action: gen.Remove},
	}}, false)
	for _, want := range []string{
		"left       " + filepath.Join("svc", "cmd/oldclient/main.go") + " (generated from this .proto before, and no longer; changed since, so gen leaves it: delete it",
		"removed    " + filepath.Join("svc", "oldclient/old.go") + " (generated from this .proto before, and no longer)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("gen's list lacks %q:\n%s", want, out.String())
		}
	}
}
