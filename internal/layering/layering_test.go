package layering

import (
	"bufio"
	"bytes"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/zrpcio/zrpc"

// agentLibraries are the libraries only the agent may link. The
// erasure code (klauspost/reedsolomon, through storage/codec) is not one:
// package client encodes and decodes blob shards itself when it reads
// them from their holders.
var agentLibraries = []string{
	"github.com/hashicorp/raft",
	"github.com/hashicorp/memberlist",
	"go.etcd.io/bbolt",
}

// lean lists the packages (each with the packages below it) that service
// binaries and zrpcctl link: none of them may depend, directly or not, on
// an agent library or on the agent's own packages.
var lean = []string{"api", "client", "rpc", "cmd/zrpcctl"}

// agentPackages are zrpc's packages that make up the agent.
var agentPackages = []string{"node", "raftstore", "gossip", "storage", "testcluster"}

// never lists imports forbidden whatever the documentation says.
var never = map[string][]string{
	"storage": {"node", "raftstore", "gossip"},
	"api":     {"*"}, // api imports nothing of zrpc outside api
}

// graph maps every package zrpc's packages depend on (theirs included) to
// its direct imports, as go list reports them (test files excluded).
type graph map[string][]string

func listGraph(t *testing.T) graph {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...")
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./...: %v\n%s", err, stderr.String())
	}
	g := graph{}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 {
			g[f[0]] = f[1:]
		}
	}
	if _, ok := g[module+"/client"]; !ok {
		t.Fatalf("go list -deps ./... did not list %s/client:\n%s", module, out)
	}
	return g
}

// ourPackages returns zrpc's packages, relative to the module, with their
// imports of other zrpc packages.
func (g graph) ourPackages() map[string][]string {
	out := map[string][]string{}
	for path, imps := range g {
		r, ok := ours(path)
		if !ok {
			continue
		}
		out[r] = []string{}
		for _, imp := range imps {
			if ri, ok := ours(imp); ok {
				out[r] = append(out[r], ri)
			}
		}
	}
	return out
}

// chain returns a shortest chain of imports from one package to another,
// or nil when from does not depend on to.
func (g graph) chain(from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == to {
			var c []string
			for ; p != ""; p = prev[p] {
				c = append(c, strings.TrimPrefix(p, module+"/"))
			}
			slices.Reverse(c)
			return c
		}
		for _, imp := range g[p] {
			if _, seen := prev[imp]; !seen {
				prev[imp] = p
				queue = append(queue, imp)
			}
		}
	}
	return nil
}

func ours(path string) (string, bool) {
	if path == module {
		return "", true
	}
	r, ok := strings.CutPrefix(path, module+"/")
	return r, ok
}

// under reports whether path is prefix or a package below it.
func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// row is one line of the package table: the packages it describes and the
// zrpc packages they may import.
type row struct {
	line     int
	packages []string
	allowed  []string
}

// readTable parses the table under "## Packages" in docs/ARCHITECTURE.md.
// The first cell names packages in backquotes; the last lists what they
// may import: package paths separated by commas, where `x` also allows
// every package below x, `x/*` only those, words in parentheses are
// comments, and "–" means nothing.
func readTable(t *testing.T) []row {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "docs", "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []row
	inTable := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			inTable = line == "## Packages"
			continue
		case !inTable || !strings.HasPrefix(line, "|"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 || strings.HasPrefix(strings.TrimSpace(cells[0]), "---") || strings.TrimSpace(cells[0]) == "package" {
			continue
		}
		r := row{line: n, packages: quoted(cells[0]), allowed: allowedList(cells[len(cells)-1])}
		if len(r.packages) == 0 {
			t.Fatalf("docs/ARCHITECTURE.md:%d: the first cell names no package in backquotes", n)
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("docs/ARCHITECTURE.md has no package table under \"## Packages\"")
	}
	return rows
}

func quoted(cell string) []string {
	var out []string
	parts := strings.Split(cell, "`")
	for i := 1; i < len(parts); i += 2 {
		out = append(out, strings.TrimSpace(parts[i]))
	}
	return out
}

func allowedList(cell string) []string {
	var b strings.Builder
	depth := 0
	for _, r := range cell {
		switch {
		case r == '(':
			depth++
		case r == ')':
			depth--
		case depth == 0 && r != '`':
			b.WriteRune(r)
		}
	}
	var out []string
	for _, e := range strings.Split(b.String(), ",") {
		e = strings.TrimSpace(e)
		if e != "" && e != "–" && e != "-" {
			out = append(out, e)
		}
	}
	return out
}

func (r row) allows(imp string) bool {
	for _, a := range r.allowed {
		if base, ok := strings.CutSuffix(a, "/*"); ok {
			if strings.HasPrefix(imp, base+"/") {
				return true
			}
		} else if under(imp, a) {
			return true
		}
	}
	return false
}

// rowFor returns the row of the package itself, or of its nearest
// ancestor that has one.
func rowFor(rows []row, path string) (row, bool) {
	best, found, bestLen := row{}, false, -1
	for _, r := range rows {
		for _, p := range r.packages {
			if under(path, p) && len(p) > bestLen {
				best, found, bestLen = r, true, len(p)
			}
		}
	}
	return best, found
}

func TestImportsFollowTheDocumentedLayering(t *testing.T) {
	rows := readTable(t)
	pkgs := listGraph(t).ourPackages()
	for _, path := range slices.Sorted(maps.Keys(pkgs)) {
		r, ok := rowFor(rows, path)
		if !ok {
			t.Errorf("package %s has no row in docs/ARCHITECTURE.md's package table: add one saying what it is and what it imports", path)
			continue
		}
		for _, imp := range pkgs[path] {
			if !r.allows(imp) {
				t.Errorf("%s imports %s, which its row (docs/ARCHITECTURE.md:%d, imports: %s) does not allow: fix the import or, if the layering really changed, the table",
					path, imp, r.line, strings.Join(r.allowed, ", "))
			}
		}
	}
}

func TestForbiddenImports(t *testing.T) {
	pkgs := listGraph(t).ourPackages()
	for _, path := range slices.Sorted(maps.Keys(pkgs)) {
		for prefix, forbidden := range never {
			if !under(path, prefix) {
				continue
			}
			for _, imp := range pkgs[path] {
				for _, f := range forbidden {
					if (f == "*" && !under(imp, prefix)) || (f != "*" && under(imp, f)) {
						t.Errorf("%s imports %s: %s must never import %s", path, imp, prefix, strings.ReplaceAll(f, "*", "zrpc packages outside "+prefix))
					}
				}
			}
		}
	}
}

func TestLeanPackagesLinkNoAgentLibrary(t *testing.T) {
	g := listGraph(t)
	forbidden := slices.Clone(agentLibraries)
	for _, a := range agentPackages {
		forbidden = append(forbidden, module+"/"+a)
	}
	checked := 0
	for _, path := range slices.Sorted(maps.Keys(g.ourPackages())) {
		if !slices.ContainsFunc(lean, func(l string) bool { return under(path, l) }) {
			continue
		}
		checked++
		for _, f := range forbidden {
			if c := g.chain(module+"/"+path, f); c != nil {
				t.Errorf("%s links %s: %s (service binaries and zrpcctl must not link the agent or its libraries)", path, f, strings.Join(c, " -> "))
			}
		}
	}
	if checked < len(lean) {
		t.Fatalf("checked %d packages, fewer than the %d lean roots %q: go list did not list them", checked, len(lean), lean)
	}
}

// TestRowAllows checks the parser on a table written the documented way,
// so a change to the parser cannot make the layering test pass vacuously.
func TestRowAllows(t *testing.T) {
	r := row{allowed: allowedList(" storage/*, api (and `api/apierr`), client ")}
	for imp, want := range map[string]bool{
		"storage/codec": true, "storage": false, "api": true, "api/zrpcpb": true,
		"client": true, "client/clienttest": true, "node": false, "apis": false,
	} {
		if got := r.allows(imp); got != want {
			t.Errorf("allows(%q) = %v, want %v (allowed %q)", imp, got, want, r.allowed)
		}
	}
	if got := allowedList(" – "); len(got) != 0 {
		t.Errorf("allowedList(–) = %q, want nothing", got)
	}
}
