package node

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The YAML decoder's complaints name Go types and lines ("line 4: field
// nmae not found in type node.Config", "line 2: cannot unmarshal !!str
// `abc` into int"). explainYAML says them in the file's own terms: the
// setting, what its value should look like, and the nearest known key
// for a misspelt one.

var (
	unknownField = regexp.MustCompile(`^line (\d+): field (.+) not found in type \S+$`)
	wrongType    = regexp.MustCompile(`^line (\d+): cannot unmarshal !!(\w+)(?: (.*?))? into (\S+)$`)
)

// explainYAML rewrites the errors of a yaml.TypeError decoding src into
// Config; other errors (syntax) are returned as they are.
func explainYAML(src []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	keys := keyLines(src)
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		msgs = append(msgs, explainOne(e, keys))
	}
	return configProblems(msgs)
}

// configProblems is the error of a config file with the problems msgs,
// one a line, each starting with its line number.
func configProblems(msgs []string) error {
	head := "1 problem"
	if len(msgs) > 1 {
		head = fmt.Sprintf("%d problems", len(msgs))
	}
	return fmt.Errorf("%s:\n  %s\n(`zrpcd agent --help` lists the settings: a flag --data-dir is the key data_dir)",
		head, strings.Join(msgs, "\n  "))
}

func explainOne(e string, keys map[int]string) string {
	if m := unknownField.FindStringSubmatch(e); m != nil {
		msg := fmt.Sprintf("line %s: unknown setting %q", m[1], m[2])
		if near := nearestKey(m[2]); near != "" {
			msg += fmt.Sprintf("; did you mean %q?", near)
		}
		return msg
	}
	if m := wrongType.FindStringSubmatch(e); m != nil {
		line, _ := strconv.Atoi(m[1])
		what := map[string]string{
			"int": "a whole number", "uint64": "a whole number", "int64": "a whole number",
			"float64": "a number", "bool": "true or false",
			"time.Duration": "a duration such as 500ms, 10s or 2m",
			"[]string":      "a list (- item per line, or [a, b])",
			"string":        "a string",
		}[m[4]]
		if what == "" {
			what = "a " + m[4]
		}
		got := m[3]
		switch {
		case m[2] == "seq":
			got = "a list"
		case m[2] == "map":
			got = "a mapping"
		case got == "":
			got = "the value"
		}
		if key := keys[line]; key != "" {
			return fmt.Sprintf("line %d: %s: %s is not %s", line, key, got, what)
		}
		return fmt.Sprintf("line %d: %s is not %s", line, got, what)
	}
	return e
}

// keyLines maps the line of each top-level key, and of each item of a
// list under one, to the key.
func keyLines(src []byte) map[int]string {
	var doc yaml.Node
	out := make(map[int]string)
	if yaml.Unmarshal(src, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return out
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		key, val := m.Content[i], m.Content[i+1]
		out[key.Line] = key.Value
		if val.Line != key.Line {
			out[val.Line] = key.Value
		}
		for _, item := range val.Content {
			out[item.Line] = key.Value
		}
	}
	return out
}

// nearestKey returns the setting whose key is within two edits of key
// (or differs only in - for _ and case), "" when none is.
func nearestKey(key string) string {
	norm := strings.ToLower(strings.ReplaceAll(key, "-", "_"))
	best, bestDist := "", 3
	for _, s := range settings() {
		if d := editDistance(norm, s.Key); d < bestDist {
			best, bestDist = s.Key, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// fractionsInWholeNumbers reports each value in src, of a setting that
// takes a whole number, written as a number with a fraction, an infinity
// or (for a setting that takes no sign) below zero: the YAML decoder would
// make a whole number of it in silence.
func fractionsInWholeNumbers(src []byte) []string {
	var doc yaml.Node
	if yaml.Unmarshal(src, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	var msgs []string
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		key, val := m.Content[i], m.Content[i+1]
		s, ok := SettingByKey(key.Value)
		if !ok || val.Kind != yaml.ScalarNode || val.ShortTag() != "!!float" {
			continue
		}
		switch s.Type {
		case "int", "int64", "uint64":
		default:
			continue
		}
		f, err := strconv.ParseFloat(val.Value, 64)
		if err == nil && f == math.Trunc(f) && !math.IsInf(f, 0) && (f >= 0 || s.Type != "uint64") {
			continue // 1e9: a whole number
		}
		msgs = append(msgs, fmt.Sprintf("line %d: %s: %s is not a whole number", val.Line, key.Value, val.Value))
	}
	return msgs
}
