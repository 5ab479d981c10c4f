package main

import (
	"errors"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// agentOnly are the packages of the agent's storage and consensus: zrpcctl
// talks to agents through package client and links none of them (nor any
// package below them).
var agentOnly = []string{
	"github.com/hashicorp/raft",
	"github.com/hashicorp/memberlist",
	"go.etcd.io/bbolt",
	"github.com/klauspost/reedsolomon",
	"github.com/zrpcio/zrpc/node",
	"github.com/zrpcio/zrpc/raftstore",
	"github.com/zrpcio/zrpc/gossip",
	"github.com/zrpcio/zrpc/storage",
}

const (
	zrpcctlPath   = "github.com/zrpcio/zrpc/cmd/zrpcctl"
	zrpcctlClient = "github.com/zrpcio/zrpc/client"
)

func isAgentOnly(pkg string) bool {
	for _, p := range agentOnly {
		if pkg == p || strings.HasPrefix(pkg, p+"/") {
			return true
		}
	}
	return false
}

func TestZrpcctlLinksNoAgentPackage(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("find the go command to list zrpcctl's dependencies: %v", err)
	}
	cmd := exec.Command(goTool, "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, ".")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			stderr = string(exit.Stderr)
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	imports := map[string][]string{}
	root := ""
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		imports[f[0]] = f[1:]
		root = f[0] // go list -deps prints the named package last
	}
	// The listing is zrpcctl's: it links the client it talks to agents with.
	if _, ok := imports[zrpcctlClient]; root != zrpcctlPath || !ok {
		t.Fatalf("go list -deps listed %q without %s:\n%s", root, zrpcctlClient, out)
	}
	for _, pkg := range slices.Sorted(maps.Keys(imports)) {
		if isAgentOnly(pkg) {
			t.Errorf("zrpcctl links %s: %s", pkg, strings.Join(importChain(imports, root, pkg), " -> "))
		}
	}
}

// importChain returns a shortest chain of imports from root to pkg.
func importChain(imports map[string][]string, root, pkg string) []string {
	from := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == pkg {
			var chain []string
			for ; p != ""; p = from[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			return chain
		}
		for _, next := range imports[p] {
			if _, seen := from[next]; !seen {
				from[next] = p
				queue = append(queue, next)
			}
		}
	}
	return []string{root, "...", pkg}
}
