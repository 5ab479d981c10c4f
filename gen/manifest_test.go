package gen

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// shopRuns returns the paths of shop.proto and of its service's output
// directory, and a function that rewrites shop.proto with body, generates
// its service and writes it.
func shopRuns(t *testing.T) (proto, out string, run func(body string) *Plan) {
	proto = filepath.Join(t.TempDir(), "shop.proto")
	out = filepath.Join(t.TempDir(), "shop")
	return proto, out, func(body string) *Plan {
		t.Helper()
		if err := os.WriteFile(proto, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		plan := generate(t, proto, out)
		if err := plan.Write(); err != nil {
			t.Fatal(err)
		}
		return plan
	}
}

// actions maps each planned path to its Action.
func actions(p *Plan) map[string]Action {
	m := map[string]Action{}
	for _, f := range p.Files {
		m[f.Path] = f.Action
	}
	return m
}

// checkActions fails the test for each path whose Action is not want's.
func checkActions(t *testing.T, run string, p *Plan, want map[string]Action) {
	t.Helper()
	got := actions(p)
	for path, a := range want {
		if got[path] != a {
			t.Errorf("%s: %s is %s, want %s", run, path, got[path], a)
		}
	}
}

// goFilesMentioning lists the .go files under out whose text has s.
func goFilesMentioning(t *testing.T, out, s string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), s) {
			rel, _ := filepath.Rel(out, p)
			found = append(found, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

const shopBody = "message Req { string a = 1; }\nservice Base { rpc Get(Req) returns (Req); rpc Put(Req) returns (Req); }\n"

// TestRerunAfterGoPackageMovedRemovesTheOldMessages: after go_package
// moves the messages to another directory, a re-run removes the .pb.go
// files it wrote in the old one, and brings up to date the files the
// user owns but never changed (main.go and the logic import the
// messages); a logic file the user changed is kept, importing what it
// did.
func TestRerunAfterGoPackageMovedRemovesTheOldMessages(t *testing.T) {
	_, out, run := shopRuns(t)
	run("syntax = \"proto3\";\npackage shop;\noption go_package = \"./shoppb\";\n" + shopBody)
	edited := filepath.Join(out, "internal", "logic", "putlogic.go")
	b, err := os.ReadFile(edited)
	if err != nil {
		t.Fatal(err)
	}
	mine := strings.Replace(string(b), "package logic", "package logic\n\n// my change", 1)
	if err := os.WriteFile(edited, []byte(mine), 0o644); err != nil {
		t.Fatal(err)
	}

	second := run("syntax = \"proto3\";\npackage shop;\noption go_package = \"./storepb\";\n" + shopBody)
	checkActions(t, "after go_package moved", second, map[string]Action{
		"shoppb/shop.pb.go":          Remove,
		"shoppb/shop_grpc.pb.go":     Remove,
		"storepb/shop.pb.go":         Create,
		"main.go":                    Overwrite,
		"internal/logic/getlogic.go": Overwrite,
		"internal/logic/putlogic.go": Keep,
		"etc/shop.yaml":              Unchanged,
	})
	if _, err := os.Stat(filepath.Join(out, "shoppb")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old messages' directory is still there (%v)", err)
	}
	if got := goFilesMentioning(t, out, "/shoppb"); len(got) != 1 || got[0] != "internal/logic/putlogic.go" {
		t.Errorf("files importing the old messages' package: %v, want only the changed logic file", got)
	}
	if b, _ := os.ReadFile(edited); string(b) != mine {
		t.Errorf("the changed logic file was overwritten")
	}
}

// TestRerunAfterPackageRenameRemovesTheOldClient: after the proto package
// is renamed, a re-run removes what it wrote under the old name (the
// client package, its example command, the config file) while unchanged;
// a changed one is left, and said so at every run, until the user
// deletes it.
func TestRerunAfterPackageRenameRemovesTheOldClient(t *testing.T) {
	for _, change := range []bool{false, true} {
		_, out, run := shopRuns(t)
		run("syntax = \"proto3\";\npackage shop;\noption go_package = \"./shoppb\";\n" + shopBody)
		example := filepath.Join(out, "cmd", "shopclient", "main.go")
		if change {
			if err := os.WriteFile(example, []byte("package main\n\n// mine\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		renamed := "syntax = \"proto3\";\npackage store;\noption go_package = \"./shoppb\";\n" + shopBody
		second := run(renamed)
		wantExample := Remove
		if change {
			wantExample = Orphan
		}
		checkActions(t, "after the rename", second, map[string]Action{
			"shopclient/base.go":      Remove,
			"cmd/shopclient/main.go":  wantExample,
			"etc/shop.yaml":           Remove,
			"cmd/storeclient/main.go": Create,
			"storeclient/base.go":     Create,
			"etc/store.yaml":          Create,
			"main.go":                 Overwrite, // its -f default names etc/store.yaml
		})
		_, err := os.Stat(example)
		if change && err != nil {
			t.Errorf("the changed example %s went: %v", example, err)
		}
		if !change && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the unchanged example %s is still there (%v)", example, err)
		}
		if got := goFilesMentioning(t, out, "shopclient"); len(got) != 0 {
			t.Errorf("example changed %v: files naming the old client: %v", change, got)
		}
		third := run(renamed)
		if change {
			checkActions(t, "run after", third, map[string]Action{"cmd/shopclient/main.go": Orphan})
		} else if _, ok := actions(third)["cmd/shopclient/main.go"]; ok {
			t.Errorf("the run after still plans the removed example")
		}
	}
}

// TestRerunInsideTheNewModuleKeepsGoMod: go.mod and go.sum, written with
// a new module, are not written again once the output directory is that
// module, and are not removed for it.
func TestRerunInsideTheNewModuleKeepsGoMod(t *testing.T) {
	_, out, run := shopRuns(t)
	body := "syntax = \"proto3\";\npackage shop;\noption go_package = \"./shoppb\";\n" + shopBody
	run(body)
	second := run(body)
	for _, f := range second.Files {
		if f.Action == Remove || f.Action == Orphan {
			t.Errorf("the re-run plans %s %s", f.Path, f.Action)
		}
	}
	for _, p := range []string{"go.mod", "go.sum"} {
		if _, err := os.Stat(filepath.Join(out, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// TestManifestNamingAFileOutsideIsRefused: a manifest whose entry leaves
// the output directory (one that came with a cloned repository) fails the
// run, naming the manifest and what to do, and nothing is removed.
func TestManifestNamingAFileOutsideIsRefused(t *testing.T) {
	proto, out, run := shopRuns(t)
	body := "syntax = \"proto3\";\npackage shop;\noption go_package = \"./shoppb\";\n" + shopBody
	run(body)
	outside := filepath.Join(filepath.Dir(out), "victim.txt")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	manifest := `{"generated_by": "zrpcctl gen", "files": [{"path": "../victim.txt", "source": "shop.proto", "sha256": "` + sha256Hex([]byte("x")) + `"}]}`
	if err := os.WriteFile(filepath.Join(out, ManifestName), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := GenerateService(context.Background(), ServiceConfig{Proto: proto, Out: out})
	if err == nil || !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), ManifestName) || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("run with a manifest naming ../victim.txt: %v, want a bad-input error naming %s and what to do", err, ManifestName)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("the file outside went: %v", err)
	}
}
