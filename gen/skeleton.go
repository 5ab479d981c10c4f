package gen

import (
	"bytes"
	"embed"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

//go:embed templates/*.tmpl
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	// Placeholders: every render gets its own functions (renderer.funcs).
	"typ": func(messageRef) string { return "" }, "qual": func(goPackage, string) string { return "" },
	"stream": func(method, string) string { return "" }, "imports": func() string { return "" },
}).ParseFS(templateFS, "templates/*.tmpl"))

// skeleton is what the templates see: one service of one .proto file.
type skeleton struct {
	Name       string // short name: "user"
	Registry   string // registry name: "user.rpc"
	Proto      string // import name of the .proto file
	PkgPath    string // Go package path of Out
	ConfigFile string // "etc/user.yaml"
	Service    string // Go name of the service: "UserService"
	Comment    string // the service's leading comment, as // lines
	Methods    []method
	PB         goPackage // the service's Go package
	Aliases    []string  // message types the client package re-exports
	// Idempotent lists the full names ("/pkg.Service/Method") of the
	// methods the .proto marks idempotent (idempotency_level IDEMPOTENT or
	// NO_SIDE_EFFECTS): the client's retry may resend them after they
	// reached a server.
	Idempotent []string
}

// method is one RPC as the templates see it.
type method struct {
	Name                             string // Go name
	File                             string // logic file name
	Comment                          string // leading comment, as // lines
	In, Out                          messageRef
	ClientStreaming, ServerStreaming bool
}

// HasUnary reports whether the service has a unary RPC.
func (sk *skeleton) HasUnary() bool {
	for _, m := range sk.Methods {
		if !m.Streaming() {
			return true
		}
	}
	return false
}

// HasStreaming reports whether the service has a streaming RPC.
func (sk *skeleton) HasStreaming() bool {
	for _, m := range sk.Methods {
		if m.Streaming() {
			return true
		}
	}
	return false
}

// Streaming reports whether either side streams.
func (m method) Streaming() bool { return m.ClientStreaming || m.ServerStreaming }

// messageRef is a message's Go type: its package and name.
type messageRef struct {
	Pkg  goPackage
	Name string
}

func newSkeleton(plugin *protogen.Plugin, p *Parsed, lay *layout, pkgPath string) (*skeleton, error) {
	f := plugin.FilesByPath[p.Name]
	switch len(f.Services) {
	case 0:
		return nil, badInput("%s defines no service; gen rpc needs one (zrpcctl gen proto NAME writes a starter)", p.Name)
	case 1:
	default:
		var names []string
		for _, s := range f.Services {
			names = append(names, s.GoName)
		}
		return nil, badInput("%s defines %d services (%s); gen rpc makes one service per .proto file: move the others to their own files",
			p.Name, len(names), strings.Join(names, ", "))
	}
	s := f.Services[0]
	if len(s.Methods) == 0 {
		return nil, badInput("service %s in %s has no methods", s.GoName, p.Name)
	}
	pb := lay.pkgs[p.Name]
	name := shortName(f.Proto.GetPackage(), p.Name)
	if !token(name) || CheckModulePath(name) != nil {
		return nil, badInput("%s: cannot make a Go package name from package %q or the file name; rename one (ASCII letters, digits and underscores)", p.Name, f.Proto.GetPackage())
	}
	for _, imp := range sortedKeys(lay.pkgs) {
		if dir := lay.pkgs[imp].dir; dir == name+"client" {
			return nil, badInput("%s:%d: go_package %q puts the messages of %s in %s/, where the generated client package goes; use another directory, e.g. \"./%spb\"",
				p.OnDisk[imp], goPackageLine(plugin.FilesByPath[imp].Proto), plugin.FilesByPath[imp].Proto.GetOptions().GetGoPackage(), imp, dir, name)
		}
	}
	sk := &skeleton{
		Name: name, Registry: name + ".rpc", Proto: p.Name, PkgPath: pkgPath,
		ConfigFile: "etc/" + name + ".yaml", Service: s.GoName, Comment: comment(s.Comments.Leading), PB: pb,
	}
	ref := func(m *protogen.Message) messageRef {
		mf := plugin.FilesByPath[m.Desc.ParentFile().Path()]
		gp, ok := lay.pkgs[mf.Desc.Path()]
		if !ok {
			gp = goPackage{path: string(m.GoIdent.GoImportPath), name: string(mf.GoPackageName)}
		}
		return messageRef{Pkg: gp, Name: m.GoIdent.GoName}
	}
	seen := map[string]*protogen.Method{}
	for _, m := range s.Methods {
		file := strings.ToLower(m.GoName) + "logic.go"
		if other := seen[file]; other != nil {
			return nil, badInput("service %s: methods %s (%s) and %s (%s) would share the logic file %s: rename one of them",
				s.GoName, other.Desc.Name(), protoPos(p, other.Desc), m.Desc.Name(), protoPos(p, m.Desc), file)
		}
		seen[file] = m
		sk.Methods = append(sk.Methods, method{
			Name: m.GoName, File: file, Comment: comment(m.Comments.Leading), In: ref(m.Input), Out: ref(m.Output),
			ClientStreaming: m.Desc.IsStreamingClient(), ServerStreaming: m.Desc.IsStreamingServer(),
		})
		if idempotent(m.Desc) {
			sk.Idempotent = append(sk.Idempotent, fmt.Sprintf("/%s/%s", s.Desc.FullName(), m.Desc.Name()))
		}
	}
	taken := map[string]bool{"Target": true, "Dial": true, "DialConfig": true, "IdempotentMethods": true, s.GoName: true, "New" + s.GoName: true}
	var walk func([]*protogen.Message)
	walk = func(ms []*protogen.Message) {
		for _, m := range ms {
			if !m.Desc.IsMapEntry() && !taken[m.GoIdent.GoName] {
				sk.Aliases = append(sk.Aliases, m.GoIdent.GoName)
			}
			walk(m.Messages)
		}
	}
	walk(f.Messages)
	return sk, nil
}

// idempotent reports whether a method's options mark it safe to run twice.
func idempotent(m protoreflect.MethodDescriptor) bool {
	opts, ok := m.Options().(*descriptorpb.MethodOptions)
	if !ok {
		return false
	}
	switch opts.GetIdempotencyLevel() {
	case descriptorpb.MethodOptions_IDEMPOTENT, descriptorpb.MethodOptions_NO_SIDE_EFFECTS:
		return true
	}
	return false
}

// comment renders protogen comments as // lines, without a final newline.
func comment(c protogen.Comments) string {
	return strings.TrimSuffix(c.String(), "\n")
}

// skeletonFile is one file of the skeleton: its template, path, and
// whether the user owns it after the first run.
type skeletonFile struct {
	tmpl, path string
	user       bool
	method     *method
}

func (sk *skeleton) layout() []skeletonFile {
	files := []skeletonFile{
		{tmpl: "main.go.tmpl", path: "main.go", user: true},
		{tmpl: "etc.yaml.tmpl", path: sk.ConfigFile, user: true},
		{tmpl: "config.go.tmpl", path: "internal/config/config.go", user: true},
		{tmpl: "servicecontext.go.tmpl", path: "internal/svc/servicecontext.go", user: true},
		{tmpl: "logicdoc.go.tmpl", path: "internal/logic/doc.go", user: true},
		{tmpl: "server.go.tmpl", path: "internal/server/" + strings.ToLower(sk.Service) + "server.go"},
		{tmpl: "client.go.tmpl", path: sk.Name + "client/" + strings.ToLower(sk.Service) + ".go"},
		{tmpl: "clientmain.go.tmpl", path: "cmd/" + sk.Name + "client/main.go", user: true},
	}
	for i := range sk.Methods {
		files = append(files, skeletonFile{tmpl: "logic.go.tmpl", path: "internal/logic/" + sk.Methods[i].File, user: true, method: &sk.Methods[i]})
	}
	return files
}

// files renders the skeleton.
func (sk *skeleton) files() ([]PlannedFile, error) {
	var out []PlannedFile
	for _, sf := range sk.layout() {
		r := newRenderer(sk, sf.tmpl == "client.go.tmpl")
		content, err := r.render(sf.tmpl, struct {
			*skeleton
			M *method
		}{sk, sf.method})
		if err != nil {
			return nil, fmt.Errorf("render %s: %w", sf.path, err)
		}
		out = append(out, PlannedFile{Path: sf.path, Content: content, User: sf.user})
	}
	return out, nil
}

// renderer renders one file, importing the message packages it uses.
type renderer struct {
	sk      *skeleton
	aliased map[string]bool   // message names the client package re-exports
	byPath  map[string]string // import path → name used in this file
	names   map[string]bool   // names taken in this file
}

// reservedNames are the packages the templates import themselves, and the
// names the templates declare at top level or as variables and parameters
// of functions that refer to message types: a message package imported
// under one of those names would be shadowed where it is used (package
// log in main.go's serve, whose logger is log).
var reservedNames = []string{"context", "errors", "flag", "fmt", "io", "os", "signal", "slog", "strings", "syscall", "time",
	"grpc", "codes", "status", "protojson", "rpc", "config", "logic", "server", "svc",
	// main.go, cmd/<name>client/main.go
	"configFile", "main", "run", "serve", "log", "c", "ctx", "stop", "opts", "srv", "err", "svcCtx", "startCtx", "cancel",
	"stopCtx", "cancelStop", "agents", "wait", "conn", "client", "resp", "stream",
	// logic, server and client packages
	"l", "s", "m", "in"}

func newRenderer(sk *skeleton, clientPackage bool) *renderer {
	r := &renderer{sk: sk, byPath: map[string]string{}, names: map[string]bool{sk.Name + "client": true}}
	for _, n := range reservedNames {
		r.names[n] = true
	}
	if clientPackage {
		r.aliased = map[string]bool{}
		for _, a := range sk.Aliases {
			r.aliased[a] = true
		}
	}
	return r
}

// qual is pkg.name, importing pkg.
func (r *renderer) qual(pkg goPackage, name string) string {
	n, ok := r.byPath[pkg.path]
	if !ok {
		n = pkg.name
		for i := 2; r.names[n]; i++ {
			n = pkg.name + strconv.Itoa(i)
		}
		r.byPath[pkg.path], r.names[n] = n, true
	}
	return n + "." + name
}

// typ is a message's Go type in this file.
func (r *renderer) typ(m messageRef) string {
	if r.aliased != nil && m.Pkg.path == r.sk.PB.path && r.aliased[m.Name] {
		return m.Name
	}
	return r.qual(m.Pkg, m.Name)
}

// stream is the grpc generic stream type of m from side ("Client" or "Server").
func (r *renderer) stream(m method, side string) string {
	switch {
	case m.ClientStreaming && m.ServerStreaming:
		return "grpc.BidiStreaming" + side + "[" + r.typ(m.In) + ", " + r.typ(m.Out) + "]"
	case m.ClientStreaming:
		return "grpc.ClientStreaming" + side + "[" + r.typ(m.In) + ", " + r.typ(m.Out) + "]"
	default:
		return "grpc.ServerStreaming" + side + "[" + r.typ(m.Out) + "]"
	}
}

// importsMarker stands where the message packages' imports go; they are
// known only once the whole file is rendered.
const importsMarker = "__ZRPC_GEN_IMPORTS__"

func (r *renderer) render(name string, data any) ([]byte, error) {
	t, err := templates.Clone()
	if err != nil {
		return nil, err
	}
	t.Funcs(template.FuncMap{"typ": r.typ, "qual": r.qual, "stream": r.stream, "imports": func() string { return importsMarker }})
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, data); err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(r.byPath))
	for p := range r.byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var imports strings.Builder
	for _, p := range paths {
		if n := r.byPath[p]; n != path.Base(p) {
			fmt.Fprintf(&imports, "%s ", n)
		}
		fmt.Fprintf(&imports, "%q\n", p)
	}
	return bytes.Replace(buf.Bytes(), []byte(importsMarker), []byte(imports.String()), 1), nil
}

// newModuleFiles makes go.mod (and go.sum, from a zrpc checkout) for a
// new module. With a checkout, go.mod lists zrpc's own requirements as
// indirect ones, so that the module builds without `go mod tidy`.
func newModuleFiles(cfg ServiceConfig, module string) (PlannedFile, *PlannedFile, error) {
	data := struct {
		Module, GoVersion, ZRPCVersion, GRPCVersion, ProtobufVersion, Replace string
		Indirect                                                              [][2]string
	}{Module: module, GoVersion: GoVersion, ZRPCVersion: zrpcPlaceholderVersion, GRPCVersion: GRPCVersion, ProtobufVersion: ProtobufVersion}
	var gosum *PlannedFile
	if cfg.ZRPCReplace != "" {
		dir, err := filepath.Abs(cfg.ZRPCReplace)
		if err != nil {
			return PlannedFile{}, nil, fmt.Errorf("resolve %s: %w", cfg.ZRPCReplace, err)
		}
		gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err != nil {
			return PlannedFile{}, nil, badInput("zrpc checkout %s: %w", cfg.ZRPCReplace, err)
		}
		if p, _ := modulePath(gomod); p != ZRPCModule {
			return PlannedFile{}, nil, badInput("%s is not a zrpc checkout: its go.mod declares module %q, not %s", cfg.ZRPCReplace, p, ZRPCModule)
		}
		for _, r := range requirements(gomod) {
			switch r[0] {
			case "google.golang.org/grpc":
				data.GRPCVersion = r[1]
			case "google.golang.org/protobuf":
				data.ProtobufVersion = r[1]
			default:
				data.Indirect = append(data.Indirect, r)
			}
		}
		data.Replace = dir
		if strings.ContainsAny(dir, " \t\"`") {
			data.Replace = strconv.Quote(dir)
		}
		if sum, err := os.ReadFile(filepath.Join(dir, "go.sum")); err == nil {
			gosum = &PlannedFile{Path: "go.sum", Content: sum, User: true, unrecorded: true}
		}
	}
	var buf bytes.Buffer
	t, err := templates.Clone() // the shared set is never executed, so it can always be cloned
	if err == nil {
		err = t.ExecuteTemplate(&buf, "go.mod.tmpl", data)
	}
	if err != nil {
		return PlannedFile{}, nil, fmt.Errorf("render go.mod: %w", err)
	}
	return PlannedFile{Path: "go.mod", Content: buf.Bytes(), User: true, unrecorded: true}, gosum, nil
}
