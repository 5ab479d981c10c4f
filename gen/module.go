package gen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Versions a generated go.mod requires: the same as zrpc's own go.mod
// (a test keeps them in step).
const (
	GoVersion       = "1.26.0"
	GRPCVersion     = "v1.85.0"
	ProtobufVersion = "v1.36.12"

	// ZRPCModule is zrpc's module path.
	ZRPCModule = "github.com/zrpcio/zrpc"
	// zrpcPlaceholderVersion is the version required of zrpc when a replace
	// directive points at a checkout, as `go mod edit -replace` writes it.
	zrpcPlaceholderVersion = "v0.0.0-00010101000000-000000000000"
)

// enclosingModule finds the go.mod governing dir (which need not exist
// yet) and returns its directory and module path; found is false when
// dir is in no module.
func enclosingModule(dir string) (root, path string, found bool, err error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", "", false, fmt.Errorf("resolve %s: %w", dir, err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		switch {
		case err == nil:
			p, perr := modulePath(data)
			if perr != nil {
				return "", "", false, fmt.Errorf("read %s: %w", filepath.Join(d, "go.mod"), perr)
			}
			return d, p, true, nil
		case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) && !isNotDir(err):
			return "", "", false, fmt.Errorf("look for go.mod: %w", err)
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", "", false, nil
		}
		d = parent
	}
}

// isNotDir reports whether err is ENOTDIR: a path element is a file.
func isNotDir(err error) bool {
	return errors.Is(err, syscall.ENOTDIR)
}

// modulePath reads the module directive of a go.mod file.
func modulePath(gomod []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "//"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		rest, ok := strings.CutPrefix(line, "module")
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '\t' && rest[0] != '"') {
			continue
		}
		rest = strings.TrimSpace(rest)
		if strings.HasPrefix(rest, `"`) {
			u, err := strconv.Unquote(rest)
			if err != nil {
				return "", fmt.Errorf("module directive %s: %w", rest, err)
			}
			rest = u
		}
		if rest == "" {
			break
		}
		return rest, nil
	}
	return "", errors.New("no module directive")
}

// requirements reads the require directives of a go.mod file as
// (path, version) pairs, in order.
func requirements(gomod []byte) [][2]string {
	var reqs [][2]string
	inBlock := false
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "//"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		switch {
		case line == "require (":
			inBlock = true
			continue
		case inBlock && line == ")":
			inBlock = false
			continue
		case !inBlock && strings.HasPrefix(line, "require "):
			line = strings.TrimSpace(strings.TrimPrefix(line, "require "))
		case !inBlock:
			continue
		}
		if f := strings.Fields(line); len(f) == 2 {
			reqs = append(reqs, [2]string{f[0], f[1]})
		}
	}
	return reqs
}

// CheckModulePath reports why path cannot be a Go module path, if it
// cannot: elements of letters, digits and -._~ separated by single
// slashes, none empty, starting with a dot or ending with one.
func CheckModulePath(path string) error {
	if path == "" {
		return errors.New("module path is empty")
	}
	if strings.HasPrefix(path, "/") || strings.HasSuffix(path, "/") {
		return fmt.Errorf("module path %q must not begin or end with a slash", path)
	}
	for elem := range strings.SplitSeq(path, "/") {
		if elem == "" {
			return fmt.Errorf("module path %q has an empty element (double slash)", path)
		}
		if elem[0] == '.' || elem[len(elem)-1] == '.' {
			return fmt.Errorf("module path %q: element %q must not begin or end with a dot", path, elem)
		}
		if elem[0] == '-' {
			return fmt.Errorf("module path %q: element %q must not begin with a dash", path, elem)
		}
		for _, r := range elem {
			if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-._~", r)) {
				return fmt.Errorf("module path %q: character %q is not allowed", path, r)
			}
		}
	}
	return nil
}

// FindZRPCCheckout returns the root of the zrpc source tree that dir is
// in, if it is in one.
func FindZRPCCheckout(dir string) (string, bool) {
	root, path, found, err := enclosingModule(dir)
	if err != nil || !found || path != ZRPCModule {
		return "", false
	}
	return root, true
}
