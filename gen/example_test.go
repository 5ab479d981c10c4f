package gen

import (
	"context"
	"testing"
)

// TestExampleUserIsUpToDate: regenerating examples/user from its .proto
// changes no generated file, and every file the example's author owns is
// kept.
func TestExampleUserIsUpToDate(t *testing.T) {
	plan, err := GenerateService(context.Background(), ServiceConfig{Proto: "../examples/user/user.proto", Out: "../examples/user"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range plan.Files {
		want := Unchanged
		if f.User {
			want = Keep
		}
		if f.Action != want {
			t.Errorf("examples/user/%s: %s, want %s (regenerate: go run ./cmd/zrpcctl gen rpc examples/user/user.proto --out examples/user)", f.Path, f.Action, want)
		}
	}
	if plan.Registry != "user.rpc" {
		t.Errorf("examples/user registers as %q", plan.Registry)
	}
}
