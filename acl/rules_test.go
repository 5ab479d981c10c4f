package acl

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseRulesAcceptsTheLanguage(t *testing.T) {
	tests := []struct {
		name string
		text string
		want []Rule
	}{
		{"empty", "", nil},
		{"only a comment", "# nothing granted\n", nil},
		{"service and blob", `service "user." { write } blob "models/" { read }`, []Rule{
			{Service, "user.", Write}, {Blob, "models/", Read},
		}},
		{"unnamed kinds", "operator { read }\nagent { write }\nacl { deny }", []Rule{
			{Operator, "", Read}, {Agent, "", Write}, {ACL, "", Deny},
		}},
		{"every name", `service "" { read }`, []Rule{{Service, "", Read}}},
		{"escapes and comments", "service \"a\\\"b\" { write } # trailing\n\tblob \"x\"{deny}", []Rule{
			{Service, `a"b`, Write}, {Blob, "x", Deny},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRules(tt.text)
			if err != nil {
				t.Fatalf("ParseRules(%q): %v", tt.text, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseRules(%q) = %v, want %v", tt.text, got, tt.want)
			}
		})
	}
}

func TestParseRulesNamesWhereAndWhatWasExpected(t *testing.T) {
	tests := []struct {
		text      string
		line, col int
		msg       string
	}{
		{`servce "a" { read }`, 1, 1, `expected a resource (service, blob, operator, agent or acl), found "servce"`},
		{`service { read }`, 1, 9, `expected a quoted name prefix after service, found "{"`},
		{`service "a" read }`, 1, 13, `expected "{", found "read"`},
		{`service "a" { reed }`, 1, 15, `expected an access (read, write or deny), found "reed"`},
		{"service \"a\" {\n  write", 2, 8, `expected "}", found end of rules`},
		{"operator { read }\nagent \"x\" { write }", 2, 7, `expected "{", found string "x"`},
		{`blob "unterminated { read }`, 1, 6, "string is not terminated on its line"},
		{`blob "a" { read } ;`, 1, 19, `unexpected character ';'`},
		{`service "\q" { read }`, 1, 9, `bad string "\q"`},
		{"é", 1, 1, `unexpected character 'é'`},
	}
	for _, tt := range tests {
		_, err := ParseRules(tt.text)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("ParseRules(%q) = %v, want a *ParseError", tt.text, err)
			continue
		}
		if pe.Line != tt.line || pe.Col != tt.col || pe.Msg != tt.msg {
			t.Errorf("ParseRules(%q) = %d:%d %q, want %d:%d %q", tt.text, pe.Line, pe.Col, pe.Msg, tt.line, tt.col, tt.msg)
		}
		if !strings.HasPrefix(err.Error(), "rules:") {
			t.Errorf("error %q does not start with its position", err)
		}
	}
}

func TestParseRulesRefusesOversizedText(t *testing.T) {
	_, err := ParseRules(strings.Repeat(" ", maxRulesBytes+1))
	if err == nil || !strings.Contains(err.Error(), "the limit is") {
		t.Fatalf("ParseRules of %d bytes = %v, want the size limit named", maxRulesBytes+1, err)
	}
}

// FuzzParseRules checks that the parser never panics, that a failure is a
// ParseError inside the text, and that what it accepts prints back to
// rules that parse the same.
func FuzzParseRules(f *testing.F) {
	for _, s := range []string{
		`service "user." { write } blob "models/" { read } operator { read } agent { write }`,
		"acl { deny } # c\n", `service "\x00" {read}`, `blob "a`, "{}", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		rules, err := ParseRules(text)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseRules(%q) = %v, not a *ParseError", text, err)
			}
			if pe.Line < 1 || pe.Col < 1 || pe.Line > strings.Count(text, "\n")+1 {
				t.Fatalf("ParseRules(%q): position %d:%d is outside the text", text, pe.Line, pe.Col)
			}
			return
		}
		var b strings.Builder
		for _, r := range rules {
			b.WriteString(r.String())
			b.WriteByte('\n')
		}
		again, err := ParseRules(b.String())
		if err != nil {
			t.Fatalf("printed rules %q do not parse: %v", b.String(), err)
		}
		if !reflect.DeepEqual(again, rules) {
			t.Fatalf("printed rules parse to %v, want %v", again, rules)
		}
	})
}

// TestParseRulesRefusesPoliciesOverTheirBounds: the rule count and the
// prefix length of a policy are bounded when it is written, and the
// error names the bound.
func TestParseRulesRefusesPoliciesOverTheirBounds(t *testing.T) {
	rules := func(n int) string { return strings.Repeat("blob\"a\"{read}\n", n) }
	if _, err := ParseRules(rules(maxRules)); err != nil {
		t.Fatalf("%d rules: %v", maxRules, err)
	}
	long := `service "` + strings.Repeat("x", maxPrefixBytes) + `" { read }`
	if _, err := ParseRules(long); err != nil {
		t.Fatalf("a prefix of %d bytes: %v", maxPrefixBytes, err)
	}
	tests := []struct {
		name, text string
		line       int
		msg        string
	}{
		{"too many rules", rules(maxRules + 1), maxRules + 1, "more than 1024 rules, the limit of one policy"},
		{"too long a prefix", "operator { read }\n" + strings.Replace(long, `"x`, `"xx`, 1), 2, "the name prefix is 1025 bytes, the limit is 1024"},
	}
	for _, tt := range tests {
		_, err := ParseRules(tt.text)
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != tt.line || !strings.Contains(pe.Msg, tt.msg) {
			t.Errorf("%s: ParseRules = %v, want a *ParseError at line %d saying %q", tt.name, err, tt.line, tt.msg)
		}
	}
	// A stored policy written under other bounds keeps granting.
	if rs, err := parseStoredRules(rules(maxRules + 1)); err != nil || len(rs) != maxRules+1 {
		t.Fatalf("stored rules over the rule count: %d rules, %v", len(rs), err)
	}
}
