package gen

import (
	"context"
	"errors"
	"fmt"
	gotoken "go/token"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"unicode"

	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// ServiceConfig says what GenerateService makes and where.
type ServiceConfig struct {
	// Proto is the .proto file with the service; ImportPaths are -I.
	Proto       string
	ImportPaths []string
	// Out is the service's directory.
	Out string
	// Module is the module path of a new module at Out. When Out lies in
	// an existing module, leave it empty (or give the package path Out
	// has there): no go.mod is written then.
	Module string
	// ZRPCReplace, for a new module, is a zrpc checkout: go.mod replaces
	// zrpc with it and its go.sum seeds the new one.
	ZRPCReplace string
	// CompilerVersion is the protoc version headers name (nil: unknown).
	CompilerVersion *pluginpb.Version
}

// ErrBadInput marks errors about the input (the .proto file, flags, the
// output directory), as opposed to I/O failures.
var ErrBadInput = errors.New("bad input")

// inputError is an error about the input; errors.Is(err, ErrBadInput)
// holds for it, and its message is only the problem.
type inputError struct{ err error }

func (e *inputError) Error() string        { return e.err.Error() }
func (e *inputError) Unwrap() error        { return e.err }
func (e *inputError) Is(target error) bool { return target == ErrBadInput }

func badInput(format string, args ...any) error {
	return &inputError{fmt.Errorf(format, args...)}
}

// GenerateService generates the service of cfg.Proto in memory: its Go
// code, the skeleton around it, and the typed client. Nothing is written;
// the returned Plan says what Write would create, overwrite or keep.
func GenerateService(ctx context.Context, cfg ServiceConfig) (*Plan, error) {
	if cfg.Out == "" {
		return nil, badInput("no output directory")
	}
	if st, err := os.Stat(cfg.Out); err == nil && !st.IsDir() {
		return nil, badInput("output %s is a file, not a directory", cfg.Out)
	}
	mod, err := resolveModule(cfg)
	if err != nil {
		return nil, err
	}
	p, err := Parse(ctx, ParseConfig{File: cfg.Proto, ImportPaths: cfg.ImportPaths})
	if err != nil {
		return nil, err
	}
	lay, err := newLayout(p, mod.pkgPath)
	if err != nil {
		return nil, err
	}
	plugin, err := newPlugin(p, CodeOptions{Parameter: lay.parameter(), CompilerVersion: cfg.CompilerVersion, Generate: lay.generate})
	if err != nil {
		return nil, err
	}
	sk, err := newSkeleton(plugin, p, lay, mod.pkgPath)
	if err != nil {
		return nil, err
	}
	files, err := lay.code(plugin)
	if err != nil {
		return nil, err
	}
	more, err := sk.files()
	if err != nil {
		return nil, err
	}
	files = append(files, more...)
	if err := checkGoNames(plugin, p, lay, files); err != nil {
		return nil, err
	}
	if mod.newModule {
		gomod, gosum, err := newModuleFiles(cfg, mod.pkgPath)
		if err != nil {
			return nil, err
		}
		files = append(files, gomod)
		if gosum != nil {
			files = append(files, *gosum)
		}
	}
	w, err := readManifest(cfg.Out, p.Name)
	if err != nil {
		return nil, err
	}
	plan, err := newPlan(cfg.Out, files, w)
	if err != nil {
		return nil, err
	}
	stale, err := staleFiles(cfg.Out, p.Name, files)
	if err != nil {
		return nil, err
	}
	recorded, err := w.stale(cfg.Out, files)
	if err != nil {
		return nil, err
	}
	for _, f := range recorded {
		if !slices.ContainsFunc(stale, func(s PlannedFile) bool { return s.Path == f.Path }) {
			stale = append(stale, f)
		}
	}
	plan.Files = append(plan.Files, stale...)
	plan.manifest = w.next(plan.Files)
	plan.Registry, plan.ConfigFile = sk.Registry, sk.ConfigFile
	return plan, nil
}

// moduleInfo is where the generated packages live in Go's namespace.
type moduleInfo struct {
	pkgPath   string // Go package path of Out
	newModule bool   // Out is in no module: a go.mod is generated
}

func resolveModule(cfg ServiceConfig) (moduleInfo, error) {
	root, modPath, found, err := enclosingModule(cfg.Out)
	if err != nil {
		return moduleInfo{}, err
	}
	if !found {
		if cfg.Module == "" {
			return moduleInfo{}, badInput("%s is not inside a Go module: give the new module's path with --module (e.g. example.com/user)", cfg.Out)
		}
		if err := CheckModulePath(cfg.Module); err != nil {
			return moduleInfo{}, badInput("--module: %w", err)
		}
		if err := checkNotVendored(cfg.Module); err != nil {
			return moduleInfo{}, badInput("--module: %w; choose another module path", err)
		}
		return moduleInfo{pkgPath: cfg.Module, newModule: true}, nil
	}
	abs, err := filepath.Abs(cfg.Out)
	if err != nil {
		return moduleInfo{}, fmt.Errorf("resolve %s: %w", cfg.Out, err)
	}
	rel, err := filepath.Rel(root, abs)
	if err != nil {
		return moduleInfo{}, fmt.Errorf("resolve %s: %w", cfg.Out, err)
	}
	pkgPath := modPath
	if rel != "." {
		pkgPath += "/" + filepath.ToSlash(rel)
	}
	if err := CheckModulePath(pkgPath); err != nil {
		return moduleInfo{}, badInput("%s inside module %s: %w", cfg.Out, modPath, err)
	}
	if err := checkNotVendored(pkgPath); err != nil {
		return moduleInfo{}, badInput("%s inside module %s: %w; choose another directory", cfg.Out, modPath, err)
	}
	if cfg.Module != "" && cfg.Module != pkgPath {
		return moduleInfo{}, badInput("%s is inside module %s (go.mod in %s), so its package path is %s, not --module %s; drop --module or pick a directory outside that module",
			cfg.Out, modPath, root, pkgPath, cfg.Module)
	}
	return moduleInfo{pkgPath: pkgPath}, nil
}

// checkNotVendored fails when pkgPath, the service's package path, has an
// element vendor: the go command takes the packages below it for vendored
// copies and refuses to build them ("use of vendored package not allowed").
func checkNotVendored(pkgPath string) error {
	for elem := range strings.SplitSeq(pkgPath, "/") {
		if elem == "vendor" {
			return fmt.Errorf("package path %s has an element vendor: the go command would take the service's packages (%s/internal/svc) for vendored copies and not build them", pkgPath, pkgPath)
		}
	}
	return nil
}

// goPackage is a generated Go package: its import path, name, and
// directory relative to Out.
type goPackage struct {
	path, name, dir string
}

// layout places the Go code of every .proto file read from disk.
type layout struct {
	target   string               // import name of the service's file
	pkgs     map[string]goPackage // by import name
	generate []string             // import names whose code goes under Out
	onDisk   map[string]string    // import name → path, as Parsed.OnDisk
}

// newLayout decides each file's Go package. A file's code goes under Out
// when its go_package is relative ("./user"), missing, inside Out's
// package path, or (for the service's own file) anywhere else: the
// service needs its code. Imported files with an outside go_package are
// expected to exist as Go packages already.
func newLayout(p *Parsed, pkgPath string) (*layout, error) {
	lay := &layout{target: p.Name, pkgs: map[string]goPackage{}, onDisk: p.OnDisk}
	byName := map[string]*descriptorpb.FileDescriptorProto{}
	for _, f := range p.Files {
		byName[f.GetName()] = f
	}
	targetPkg := byName[p.Name].GetPackage()
	byDir := map[string]string{} // directory → import name of the first file placed there
	for _, name := range sortedKeys(p.OnDisk) {
		f := byName[name]
		if f == nil {
			continue
		}
		if strings.ContainsAny(name, ",=;") {
			return nil, badInput("proto file name %q: commas, semicolons and equal signs are not supported", name)
		}
		gp, inside, err := placeFile(f, name == p.Name, targetPkg, pkgPath)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", p.OnDisk[name], goPackageLine(f), err)
		}
		if !inside {
			continue
		}
		if other, ok := byDir[gp.dir]; ok && lay.pkgs[other].name != gp.name {
			return nil, badInput("%s:%d: Go package %s of %s is named %s, that of %s (in the same directory) %s: give both files the same package name",
				p.OnDisk[name], goPackageLine(f), gp.path, name, gp.name, other, lay.pkgs[other].name)
		}
		byDir[gp.dir] = name
		lay.pkgs[name] = gp
		lay.generate = append(lay.generate, name)
	}
	return lay, nil
}

// goPackageLine is the line of f's go_package option, else of its package
// statement, else 1.
func goPackageLine(f *descriptorpb.FileDescriptorProto) int {
	const (
		packageField   = 2  // FileDescriptorProto.package
		optionsField   = 8  // FileDescriptorProto.options
		goPackageField = 11 // FileOptions.go_package
	)
	line := 1
	for _, loc := range f.GetSourceCodeInfo().GetLocation() {
		p, span := loc.GetPath(), loc.GetSpan()
		switch {
		case len(span) == 0:
		case len(p) == 2 && p[0] == optionsField && p[1] == goPackageField:
			return int(span[0]) + 1
		case len(p) == 1 && p[0] == packageField:
			line = int(span[0]) + 1
		}
	}
	return line
}

// placeFile decides the Go package of f's code. Its errors are about f's
// go_package option (or, without one, its package).
func placeFile(f *descriptorpb.FileDescriptorProto, target bool, targetPkg, pkgPath string) (goPackage, bool, error) {
	goPkg := f.GetOptions().GetGoPackage()
	importPath, name, hasName := strings.Cut(goPkg, ";")
	var dir string
	switch {
	case importPath == "":
		// No go_package: a package named after the proto package.
		if !target && f.GetPackage() != targetPkg {
			dir = shortName(f.GetPackage(), f.GetName())
		}
	case strings.HasPrefix(importPath, "./") || importPath == ".":
		dir = path.Clean(importPath)
	case importPath == pkgPath:
		dir = "."
	case strings.HasPrefix(importPath, pkgPath+"/"):
		dir = path.Clean(strings.TrimPrefix(importPath, pkgPath+"/"))
	case target:
		// Elsewhere: the service still needs the code, so it goes under Out.
	default:
		return goPackage{}, false, nil
	}
	if !hasName {
		name = path.Base(importPath)
		if importPath == "" || importPath == "." {
			name = shortName(targetPkg, f.GetName())
			if !target {
				name = shortName(f.GetPackage(), f.GetName())
			}
		}
		name = goIdentifier(name)
	}
	if dir == "" {
		dir = name
	}
	if !token(name) {
		return goPackage{}, false, badInput("go_package %q: %q is not a valid Go package name", goPkg, name)
	}
	if reservedPackageName(name) {
		if goPkg == "" {
			return goPackage{}, false, badInput("package %q makes the Go package name %q, which a package the service imports cannot have; add option go_package = \"./%spb\";", f.GetPackage(), name, name)
		}
		return goPackage{}, false, badInput("go_package %q: a package the service imports cannot be named %q; name it with go_package = \"<import path>;<name>\"", goPkg, name)
	}
	if dir == "." || strings.HasPrefix(dir, "../") || dir == ".." {
		return goPackage{}, false, badInput("go_package %q would put generated code outside a subdirectory of the service (where package main lives); use one like \"./%s\"", goPkg, name)
	}
	if problem := dirProblem(dir); problem != "" {
		if goPkg == "" {
			return goPackage{}, false, badInput("package %q puts its Go code in %s/, which %s; add option go_package = \"./%spb\";", f.GetPackage(), dir, problem, name)
		}
		return goPackage{}, false, badInput("go_package %q: directory %s/ %s; use another directory", goPkg, dir, problem)
	}
	if err := CheckModulePath(pkgPath + "/" + dir); err != nil {
		return goPackage{}, false, badInput("go_package %q: directory %s makes an invalid Go import path (%v); use a directory of ASCII letters, digits and -._~", goPkg, dir, err)
	}
	return goPackage{path: pkgPath + "/" + dir, name: name, dir: dir}, true, nil
}

// reservedPackageName reports whether no package the service imports can
// have name as its name.
func reservedPackageName(name string) bool {
	return gotoken.IsKeyword(name) || name == "main" || name == "init"
}

// dirProblem says why the generated Go package in dir (relative to the
// service's directory) would not build, or is "" when it would.
func dirProblem(dir string) string {
	elems := strings.Split(dir, "/")
	switch elems[0] {
	case "internal", "etc", "cmd":
		return "collides with the skeleton's " + elems[0] + "/ directory"
	}
	for _, e := range elems {
		switch {
		case e == "vendor":
			return "has an element vendor: the go command takes the packages there for vendored copies and will not import them"
		case e == "internal":
			return "is inside an internal/ directory that the service's server and logic could not import"
		}
	}
	return ""
}

// shortName is the service's short name: the last element of the proto
// package that is not a version ("shop.v1" → "shop"), else the file name.
func shortName(protoPkg, fileName string) string {
	elems := strings.Split(protoPkg, ".")
	for i := len(elems) - 1; i >= 0; i-- {
		e := elems[i]
		if e != "" && !isVersion(e) {
			return strings.ToLower(e)
		}
	}
	return strings.ToLower(strings.TrimSuffix(path.Base(fileName), ".proto"))
}

// isVersion matches v1, v2beta1, v1alpha.
func isVersion(s string) bool {
	if len(s) < 2 || s[0] != 'v' || s[1] < '0' || s[1] > '9' {
		return false
	}
	return true
}

// goIdentifier keeps the letters, digits and underscores of s, as
// protoc-gen-go cleans package names.
func goIdentifier(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// token reports whether s is a valid Go identifier (and so package name).
func token(s string) bool {
	if s == "" || s == "_" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || unicode.IsLetter(r) || (i > 0 && unicode.IsDigit(r))) {
			return false
		}
	}
	return true
}

// parameter is the plugin parameter placing each file's package, as
// protoc's M options do.
func (lay *layout) parameter() string {
	params := []string{"paths=source_relative"}
	for _, name := range lay.generate {
		gp := lay.pkgs[name]
		params = append(params, "M"+name+"="+gp.path+";"+gp.name)
	}
	return strings.Join(params, ",")
}

// code runs the message and stub generators and places their files.
func (lay *layout) code(plugin *protogen.Plugin) ([]PlannedFile, error) {
	for _, f := range plugin.Files {
		if f.Generate {
			generateMessages(plugin, f)
			generateStubs(plugin, f)
		}
	}
	resp := plugin.Response()
	if resp.Error != nil {
		return nil, fmt.Errorf("generate go code for %s: %s", lay.target, resp.GetError())
	}
	var out []PlannedFile
	from := map[string]string{} // planned path → import name of its .proto
	for _, rf := range resp.File {
		placed := false
		for _, name := range lay.generate {
			prefix := strings.TrimSuffix(name, ".proto")
			suffix, ok := strings.CutPrefix(rf.GetName(), prefix)
			if !ok || (suffix != ".pb.go" && suffix != "_grpc.pb.go") {
				continue
			}
			p := lay.pkgs[name].dir + "/" + path.Base(prefix) + suffix
			if other, ok := from[p]; ok && other != name {
				return nil, badInput("%s and %s would both be generated as %s (one Go package directory, one file name): rename one of the .proto files or give it another go_package",
					lay.onDisk[other], lay.onDisk[name], p)
			}
			from[p] = name
			out = append(out, PlannedFile{Path: p, Content: []byte(rf.GetContent())})
			placed = true
			break
		}
		if !placed {
			return nil, fmt.Errorf("generate go code for %s: unexpected output file %s", lay.target, rf.GetName())
		}
	}
	return out, nil
}
