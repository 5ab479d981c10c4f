package gen

import (
	"bytes"
	"strings"
	"unicode"
)

// StarterProto returns a starter .proto file for a service called name
// ("user"): one unary RPC, a go_package inside the service directory:
// "./user", or "./funcpb" where the name cannot be a Go package's or
// its directory's (func, main, internal).
func StarterProto(name string) ([]byte, error) {
	if !starterName(name) {
		return nil, badInput("service name %q: use lowercase letters, digits and underscores, starting with a letter (e.g. user)", name)
	}
	if checkNotVendored(name) != nil {
		return nil, badInput("service name %q: the go command does not build the packages of a module or directory called vendor; choose another name (e.g. vendors)", name)
	}
	t, err := templates.Clone()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	goPackage := "./" + name
	if reservedPackageName(name) || dirProblem(name) != "" {
		goPackage += "pb"
	}
	err = t.ExecuteTemplate(&buf, "starter.proto.tmpl", struct{ Name, Service, GoPackage string }{name, camel(name), goPackage})
	return buf.Bytes(), err
}

func starterName(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// camel turns user_profile into UserProfile.
func camel(s string) string {
	var b strings.Builder
	up := true
	for _, r := range s {
		if r == '_' {
			up = true
			continue
		}
		if up {
			r = unicode.ToUpper(r)
			up = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
