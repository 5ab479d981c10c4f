package gen

import (
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"path"
	"sort"
	"strings"

	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// checkGoNames fails when a generated Go package would declare a name
// twice: two .proto elements whose Go names are the same (messages foo_bar
// and FooBar are both FooBar), or one whose Go name the gRPC stubs also
// declare (message UserClient beside service User). protoc's plugins write
// such code and leave the compiler to report it in the generated files;
// the error here names the .proto elements instead.
func checkGoNames(plugin *protogen.Plugin, p *Parsed, lay *layout, files []PlannedFile) error {
	byDir := map[string][]PlannedFile{}
	var dirs []string
	for _, f := range files {
		if !strings.HasSuffix(f.Path, ".go") {
			continue
		}
		dir := path.Dir(f.Path)
		if byDir[dir] == nil {
			dirs = append(dirs, dir)
		}
		byDir[dir] = append(byDir[dir], f)
	}
	sort.Strings(dirs)
	var (
		origins map[string][]string
		unnamed error // a name declared twice that no .proto element explains
	)
	for _, dir := range dirs {
		name, ok := declaredTwice(byDir[dir])
		if !ok {
			continue
		}
		if origins == nil {
			origins = goNameOrigins(plugin, p, lay)
		}
		if o := origins[dir+"."+name]; len(o) >= 2 {
			return badInput("%s both become the Go name %s in package %s/: rename one of them",
				strings.Join(o, " and "), name, dir)
		} else if len(o) == 1 {
			return badInput("%s becomes the Go name %s, which the code generated in %s/ declares already: rename it", o[0], name, dir)
		}
		if unnamed == nil {
			unnamed = badInput("the code generated in %s/ would declare %s twice: rename what the .proto calls %s", dir, name, name)
		}
	}
	return unnamed
}

// declaredTwice returns a top-level name (or Type.Method) that the Go files
// of one directory declare more than once. Files that do not parse are left
// to the formatter to report.
func declaredTwice(files []PlannedFile) (string, bool) {
	fset := gotoken.NewFileSet()
	seen := map[string]bool{}
	var methodDup string
	for _, f := range files {
		af, err := parser.ParseFile(fset, f.Path, f.Content, parser.SkipObjectResolution)
		if err != nil {
			continue
		}
		for _, decl := range af.Decls {
			for _, name := range declNames(decl) {
				if name == "_" || name == "init" {
					continue
				}
				if seen[name] {
					if !strings.Contains(name, ".") {
						return name, true
					}
					if methodDup == "" {
						methodDup = name
					}
				}
				seen[name] = true
			}
		}
	}
	return methodDup, methodDup != ""
}

// declNames are the names a top-level declaration declares; methods as
// Type.Method.
func declNames(decl ast.Decl) []string {
	switch d := decl.(type) {
	case *ast.FuncDecl:
		if d.Recv == nil || len(d.Recv.List) == 0 {
			return []string{d.Name.Name}
		}
		return []string{receiverType(d.Recv.List[0].Type) + "." + d.Name.Name}
	case *ast.GenDecl:
		var names []string
		for _, spec := range d.Specs {
			switch s := spec.(type) {
			case *ast.TypeSpec:
				names = append(names, s.Name.Name)
			case *ast.ValueSpec:
				for _, n := range s.Names {
					names = append(names, n.Name)
				}
			}
		}
		return names
	}
	return nil
}

// receiverType is the name of a method's receiver type: T of *T, T, T[X].
func receiverType(e ast.Expr) string {
	for {
		switch t := e.(type) {
		case *ast.StarExpr:
			e = t.X
		case *ast.IndexExpr:
			e = t.X
		case *ast.IndexListExpr:
			e = t.X
		case *ast.ParenExpr:
			e = t.X
		case *ast.Ident:
			return t.Name
		default:
			return ""
		}
	}
}

// goNameOrigins maps "dir.GoName" to the .proto elements ("message
// shop.FooBar (shop.proto:12:1)") whose generated code declares GoName in
// the package in dir.
func goNameOrigins(plugin *protogen.Plugin, p *Parsed, lay *layout) map[string][]string {
	out := map[string][]string{}
	addIn := func(dir, goName, kind string, d protoreflect.Descriptor) {
		o := fmt.Sprintf("%s %s (%s)", kind, d.FullName(), protoPos(p, d))
		key := dir + "." + goName
		for _, have := range out[key] {
			if have == o {
				return
			}
		}
		out[key] = append(out[key], o)
	}
	for _, s := range plugin.FilesByPath[p.Name].Services {
		for _, m := range s.Methods {
			addIn("internal/logic", m.GoName+"Logic", "method", m.Desc)
			addIn("internal/logic", "New"+m.GoName+"Logic", "method", m.Desc)
		}
	}
	for _, name := range lay.generate {
		f := plugin.FilesByPath[name]
		dir := lay.pkgs[name].dir
		add := func(goName, kind string, d protoreflect.Descriptor) { addIn(dir, goName, kind, d) }
		addEnum := func(e *protogen.Enum) {
			add(e.GoIdent.GoName, "enum", e.Desc)
			add(e.GoIdent.GoName+"_name", "enum", e.Desc)
			add(e.GoIdent.GoName+"_value", "enum", e.Desc)
			for _, v := range e.Values {
				add(v.GoIdent.GoName, "enum value", v.Desc)
			}
		}
		var addMessages func([]*protogen.Message)
		addMessages = func(ms []*protogen.Message) {
			for _, m := range ms {
				add(m.GoIdent.GoName, "message", m.Desc)
				for _, fd := range m.Fields {
					if fd.Oneof != nil && !fd.Oneof.Desc.IsSynthetic() {
						add(fd.GoIdent.GoName, "oneof field", fd.Desc)
					}
				}
				for _, e := range m.Enums {
					addEnum(e)
				}
				for _, x := range m.Extensions {
					add(x.GoIdent.GoName, "extension", x.Desc)
				}
				addMessages(m.Messages)
			}
		}
		addMessages(f.Messages)
		for _, e := range f.Enums {
			addEnum(e)
		}
		for _, x := range f.Extensions {
			add(x.GoIdent.GoName, "extension", x.Desc)
		}
		for _, s := range f.Services {
			n := s.GoName
			for _, stub := range []string{n + "Client", "New" + n + "Client", n + "Server", "Unimplemented" + n + "Server",
				"Unsafe" + n + "Server", "Register" + n + "Server", n + "_ServiceDesc"} {
				add(stub, "service", s.Desc)
			}
			for _, m := range s.Methods {
				for _, stub := range []string{n + "_" + m.GoName + "_FullMethodName", n + "_" + m.GoName + "Client", n + "_" + m.GoName + "Server"} {
					add(stub, "method", m.Desc)
				}
			}
		}
	}
	return out
}

// protoPos is where d is declared: file:line:column, the file's path on
// disk when it was read from disk.
func protoPos(p *Parsed, d protoreflect.Descriptor) string {
	fd := d.ParentFile()
	file := fd.Path()
	if disk, ok := p.OnDisk[file]; ok {
		file = disk
	}
	loc := fd.SourceLocations().ByDescriptor(d)
	return fmt.Sprintf("%s:%d:%d", file, loc.StartLine+1, loc.StartColumn+1)
}
