package rpc

import (
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// expandEnvNodes applies expandEnv to every scalar value of a parsed YAML
// document (comments are not values, so a commented-out ${NAME} is left
// alone) and reports whether any changed. An unquoted value is typed
// again after expansion (a port from ${PORT} is a number); a quoted one
// stays a string.
func expandEnvNodes(n *yaml.Node) (bool, error) {
	changed := false
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "${") {
		v, err := expandEnv(n.Value)
		if err != nil {
			return false, fmt.Errorf("line %d: %w", n.Line, err)
		}
		n.Value, changed = v, true
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
			n.Tag = ""
		}
	}
	for _, c := range n.Content {
		ch, err := expandEnvNodes(c)
		if err != nil {
			return false, err
		}
		changed = changed || ch
	}
	return changed, nil
}

// expandEnv replaces each ${NAME} in a config value with the value
// of the environment variable NAME, so that secrets (a token, a password)
// and per-host values come from the environment instead of the file or
// the command line. "$${" stands for a literal "${"; a lone "$" is left as
// it is. A variable that is not set, an empty or malformed name, or an
// unclosed "${" is an error naming it: a config that silently took an
// empty token would fail far from its cause.
func expandEnv(text string) (string, error) {
	if !strings.Contains(text, "${") {
		return text, nil
	}
	var b strings.Builder
	b.Grow(len(text))
	for i := 0; i < len(text); {
		switch {
		case strings.HasPrefix(text[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(text[i:], "${"):
			end := strings.IndexByte(text[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("\"${\" without a closing \"}\" (write $${ for a literal ${)")
			}
			name := text[i+2 : i+end]
			if !validEnvName(name) {
				return "", fmt.Errorf("${%s}: not an environment variable name (letters, digits and _, not starting with a digit)", name)
			}
			val, ok := os.LookupEnv(name)
			if !ok {
				return "", fmt.Errorf("environment variable %s is not set (referenced as ${%s})", name, name)
			}
			b.WriteString(val)
			i += end + 1
		default:
			b.WriteByte(text[i])
			i++
		}
	}
	return b.String(), nil
}

func validEnvName(name string) bool {
	if name == "" || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for _, r := range name {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
