package gen

import (
	"fmt"
	"strings"

	gengo "google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/pluginpb"
)

// CodeOptions control the Go code made for .proto files.
type CodeOptions struct {
	// Parameter is what protoc passes as --go_opt / --go-grpc_opt:
	// comma-separated "paths=source_relative", "Mfile.proto=import/path;name".
	Parameter string
	// CompilerVersion is the protoc version the headers name; nil prints
	// "(unknown)", which is the truth when no protoc ran.
	CompilerVersion *pluginpb.Version
	// Generate lists the import names to make code for; empty means the
	// parsed file alone.
	Generate []string
}

// CodeFile is one generated Go file, named as protoc's plugins name it.
type CodeFile struct {
	Name    string
	Content []byte
}

// GenerateCode makes the .pb.go (by protoc-gen-go's own generator) and
// _grpc.pb.go files of the parsed file. Files without services get no
// _grpc.pb.go, as with protoc-gen-go-grpc.
func GenerateCode(p *Parsed, opts CodeOptions) ([]CodeFile, error) {
	plugin, err := newPlugin(p, opts)
	if err != nil {
		return nil, err
	}
	for _, f := range plugin.Files {
		if !f.Generate {
			continue
		}
		generateMessages(plugin, f)
		generateStubs(plugin, f)
	}
	resp := plugin.Response()
	if resp.Error != nil {
		return nil, fmt.Errorf("generate go code for %s: %s", p.Name, resp.GetError())
	}
	out := make([]CodeFile, 0, len(resp.File))
	for _, f := range resp.File {
		out = append(out, CodeFile{Name: f.GetName(), Content: []byte(f.GetContent())})
	}
	return out, nil
}

// generateMessages writes f's .pb.go with protoc-gen-go's generator.
func generateMessages(plugin *protogen.Plugin, f *protogen.File) {
	gengo.GenerateFile(plugin, f)
}

// newPlugin builds the protogen plugin protoc would start for p.
func newPlugin(p *Parsed, opts CodeOptions) (*protogen.Plugin, error) {
	gen := opts.Generate
	if len(gen) == 0 {
		gen = []string{p.Name}
	}
	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate:  gen,
		ProtoFile:       p.Files,
		CompilerVersion: opts.CompilerVersion,
	}
	if opts.Parameter != "" {
		req.Parameter = proto.String(opts.Parameter)
	}
	plugin, err := protogen.Options{}.New(req)
	if err != nil {
		return nil, fmt.Errorf("generate go code for %s: %w", p.Name, hintGoPackage(err))
	}
	plugin.SupportedFeatures = gengo.SupportedFeatures
	plugin.SupportedEditionsMinimum = gengo.SupportedEditionsMinimum
	plugin.SupportedEditionsMaximum = gengo.SupportedEditionsMaximum
	for _, f := range plugin.Files {
		if !f.Generate {
			continue
		}
		ed := f.Proto.GetEdition()
		if f.Proto.GetSyntax() == "editions" && (ed < gengo.SupportedEditionsMinimum || ed > gengo.SupportedEditionsMaximum) {
			return nil, fmt.Errorf("generate go code for %s: edition %s is not supported (supported: %s to %s)",
				f.Desc.Path(), ed, gengo.SupportedEditionsMinimum, gengo.SupportedEditionsMaximum)
		}
	}
	return plugin, nil
}

// hintGoPackage shortens protogen's long go_package explanation.
func hintGoPackage(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "unable to determine Go import path for"); i >= 0 {
		first, _, _ := strings.Cut(msg[i:], "\n")
		return fmt.Errorf("%s: add `option go_package = \"<import path>;<package name>\";` to it", first)
	}
	return err
}

// compilerVersionString is how the headers of generated files name protoc.
func compilerVersionString(v *pluginpb.Version) string {
	if v == nil {
		return "(unknown)"
	}
	s := fmt.Sprintf("v%d.%d.%d", v.GetMajor(), v.GetMinor(), v.GetPatch())
	if v.GetSuffix() != "" {
		s += "-" + v.GetSuffix()
	}
	return s
}
