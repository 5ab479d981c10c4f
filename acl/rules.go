package acl

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Resource is a kind of thing a rule grants access to.
type Resource uint8

// Resource kinds. Service and Blob rules take a name prefix; the others
// are one resource each.
const (
	Service Resource = iota + 1
	Blob
	Operator
	Agent
	ACL
)

var resourceNames = map[Resource]string{
	Service:  "service",
	Blob:     "blob",
	Operator: "operator",
	Agent:    "agent",
	ACL:      "acl",
}

func (r Resource) String() string {
	if s, ok := resourceNames[r]; ok {
		return s
	}
	return "resource(" + strconv.Itoa(int(r)) + ")"
}

// named reports whether rules of this kind take a name prefix.
func (r Resource) named() bool { return r == Service || r == Blob }

// Access is what a rule grants, or what a call needs.
type Access uint8

// Access levels. Write implies Read; Deny refuses both.
const (
	Deny Access = iota + 1
	Read
	Write
)

var accessNames = map[Access]string{Deny: "deny", Read: "read", Write: "write"}

func (a Access) String() string {
	if s, ok := accessNames[a]; ok {
		return s
	}
	return "access(" + strconv.Itoa(int(a)) + ")"
}

// Rule grants Access to the resources of one kind whose name starts with
// Prefix ("" for every name, and for kinds without names).
type Rule struct {
	Resource Resource
	Prefix   string
	Access   Access
}

func (r Rule) String() string {
	if r.Resource.named() {
		return fmt.Sprintf("%s %q { %s }", r.Resource, r.Prefix, r.Access)
	}
	return fmt.Sprintf("%s { %s }", r.Resource, r.Access)
}

// ParseError is a syntax error in rules, at a line and column (both from
// 1, columns in bytes).
type ParseError struct {
	Line, Col int
	Msg       string
}

func (e *ParseError) Error() string { return fmt.Sprintf("rules:%d:%d: %s", e.Line, e.Col, e.Msg) }

// Bounds of one policy's rules: its text, the rules in it and the
// length of a name prefix. A token names up to 32 policies, and every
// agent compiles each token it serves into one list of rules, so they
// bound what a token costs an agent. No service or blob name is longer
// than maxPrefixBytes, so no longer prefix would match one.
const (
	maxRulesBytes  = 64 << 10
	maxRules       = 1024
	maxPrefixBytes = 1024
)

// ParseRules parses rules text:
//
//	rules  = { rule } .
//	rule   = ( "service" | "blob" ) string "{" access "}"
//	       | ( "operator" | "agent" | "acl" ) "{" access "}" .
//	access = "read" | "write" | "deny" .
//
// Strings are Go-quoted; "#" starts a comment to the end of the line. An
// error is a *ParseError naming where and what was expected, or the
// bound the rules are over (64 KiB of text, 1,024 rules, prefixes of
// 1,024 bytes).
func ParseRules(text string) ([]Rule, error) {
	return parseRules(text, true)
}

// parseStoredRules parses the rules of a stored policy. They were
// checked when written, but perhaps by an agent of a version with other
// bounds than the rule count and prefix length: the policy keeps
// granting what it granted there (the size of its text still bounds
// it).
func parseStoredRules(text string) ([]Rule, error) {
	return parseRules(text, false)
}

// parseRules parses text; bounded: the rule count and prefix lengths
// are checked too.
func parseRules(text string, bounded bool) ([]Rule, error) {
	if len(text) > maxRulesBytes {
		return nil, &ParseError{Line: 1, Col: 1, Msg: fmt.Sprintf("rules are %d bytes, the limit is %d", len(text), maxRulesBytes)}
	}
	p := &parser{lx: lexer{src: text, line: 1, col: 1}}
	p.next()
	var rules []Rule
	for p.tok.kind != tokEOF {
		line, col := p.tok.line, p.tok.col
		r, err := p.rule()
		if err != nil {
			return nil, err
		}
		if bounded && len(rules) == maxRules {
			return nil, &ParseError{Line: line, Col: col, Msg: fmt.Sprintf("more than %d rules, the limit of one policy: split them into several policies", maxRules)}
		}
		if bounded && len(r.Prefix) > maxPrefixBytes {
			return nil, &ParseError{Line: line, Col: col, Msg: fmt.Sprintf("the name prefix is %d bytes, the limit is %d (no service or blob name is longer)", len(r.Prefix), maxPrefixBytes)}
		}
		rules = append(rules, r)
	}
	return rules, nil
}

type tokKind uint8

const (
	tokEOF tokKind = iota
	tokWord
	tokString
	tokLBrace
	tokRBrace
	tokBad
)

type token struct {
	kind      tokKind
	text      string // a word, or a string's value
	raw       string // as written
	line, col int
	err       string // for tokBad
}

func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of rules"
	case tokString:
		return "string " + t.raw
	default:
		return strconv.Quote(t.raw)
	}
}

type lexer struct {
	src       string
	off       int
	line, col int
}

func (l *lexer) advance(n int) {
	for i := l.off; i < l.off+n; i++ {
		if l.src[i] == '\n' {
			l.line++
			l.col = 1
		} else {
			l.col++
		}
	}
	l.off += n
}

func (l *lexer) skipSpace() {
	for l.off < len(l.src) {
		c := l.src[l.off]
		switch {
		case c == '#':
			end := strings.IndexByte(l.src[l.off:], '\n')
			if end < 0 {
				end = len(l.src) - l.off
			}
			l.advance(end)
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			l.advance(1)
		default:
			return
		}
	}
}

func (l *lexer) next() token {
	l.skipSpace()
	t := token{line: l.line, col: l.col}
	if l.off >= len(l.src) {
		return t
	}
	rest := l.src[l.off:]
	switch c := rest[0]; {
	case c == '{' || c == '}':
		t.kind, t.raw = tokLBrace, rest[:1]
		if c == '}' {
			t.kind = tokRBrace
		}
		l.advance(1)
	case c == '"':
		return l.quoted(t)
	case isWordByte(c):
		n := 0
		for n < len(rest) && isWordByte(rest[n]) {
			n++
		}
		t.kind, t.text, t.raw = tokWord, rest[:n], rest[:n]
		l.advance(n)
	default:
		r, size := utf8.DecodeRuneInString(rest)
		t.kind, t.raw = tokBad, rest[:size]
		t.err = fmt.Sprintf("unexpected character %q", r)
		if r == utf8.RuneError {
			t.err = fmt.Sprintf("unexpected byte %#x", rest[0])
		}
		l.advance(size)
	}
	return t
}

// quoted reads a Go-quoted string on one line.
func (l *lexer) quoted(t token) token {
	rest := l.src[l.off:]
	end := -1
	for i := 1; i < len(rest); i++ {
		if rest[i] == '\\' {
			i++
			continue
		}
		if rest[i] == '\n' {
			break
		}
		if rest[i] == '"' {
			end = i + 1
			break
		}
	}
	if end < 0 {
		t.kind, t.err = tokBad, "string is not terminated on its line"
		l.advance(len(rest))
		return t
	}
	raw := rest[:end]
	v, err := strconv.Unquote(raw)
	if err != nil {
		t.kind, t.err = tokBad, fmt.Sprintf("bad string %s", raw)
		l.advance(end)
		return t
	}
	t.kind, t.text, t.raw = tokString, v, raw
	l.advance(end)
	return t
}

func isWordByte(c byte) bool {
	return c == '_' || c == '-' || c < 0x80 && (unicode.IsLetter(rune(c)) || unicode.IsDigit(rune(c)))
}

type parser struct {
	lx  lexer
	tok token
}

func (p *parser) next() { p.tok = p.lx.next() }

// fail reports that what was expected is not the current token.
func (p *parser) fail(expected string) error {
	if p.tok.kind == tokBad {
		return &ParseError{Line: p.tok.line, Col: p.tok.col, Msg: p.tok.err}
	}
	return &ParseError{Line: p.tok.line, Col: p.tok.col, Msg: fmt.Sprintf("expected %s, found %s", expected, p.tok.describe())}
}

var resourceByName = map[string]Resource{"service": Service, "blob": Blob, "operator": Operator, "agent": Agent, "acl": ACL}
var accessByName = map[string]Access{"read": Read, "write": Write, "deny": Deny}

func (p *parser) rule() (Rule, error) {
	var r Rule
	kind, ok := resourceByName[p.tok.text]
	if p.tok.kind != tokWord || !ok {
		return r, p.fail("a resource (service, blob, operator, agent or acl)")
	}
	r.Resource = kind
	p.next()
	if kind.named() {
		if p.tok.kind != tokString {
			return r, p.fail(fmt.Sprintf("a quoted name prefix after %s", kind))
		}
		r.Prefix = p.tok.text
		p.next()
	}
	if p.tok.kind != tokLBrace {
		return r, p.fail(`"{"`)
	}
	p.next()
	access, ok := accessByName[p.tok.text]
	if p.tok.kind != tokWord || !ok {
		return r, p.fail("an access (read, write or deny)")
	}
	r.Access = access
	p.next()
	if p.tok.kind != tokRBrace {
		return r, p.fail(`"}"`)
	}
	p.next()
	return r, nil
}
