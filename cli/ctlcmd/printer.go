package ctlcmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Output formats of --output.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// printer writes a command's result either for people (an aligned table,
// key/value lines or a sentence) or for programs (JSON, from the proto
// messages). Every zrpcctl command prints through one.
type printer struct {
	w    io.Writer
	json bool
}

// field is one line of a key/value listing.
type field struct {
	key, value string
}

var protoJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}

// newPrinter returns a printer of format (table or json) writing to w.
func newPrinter(w io.Writer, format string) (*printer, error) {
	switch format {
	case outputTable:
		return &printer{w: w}, nil
	case outputJSON:
		return &printer{w: w, json: true}, nil
	}
	return nil, fmt.Errorf("invalid --output %q: want %s or %s", format, outputTable, outputJSON)
}

// table prints rows under headers (upper-cased, empty cells as "-"), or, in
// JSON, msgs as an array.
func (p *printer) table(msgs []proto.Message, headers []string, rows [][]string) error {
	if p.json {
		return p.printJSON(msgs)
	}
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	upper := make([]string, len(headers))
	for i, h := range headers {
		upper[i] = strings.ToUpper(h)
	}
	fmt.Fprintln(tw, strings.Join(upper, "\t"))
	for _, row := range rows {
		fmt.Fprintln(tw, strings.Join(cells(row), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// fields prints aligned "Key: value" lines, or, in JSON, v: a proto message
// or a map of them.
func (p *printer) fields(v any, fs []field) error {
	if p.json {
		return p.printJSON(v)
	}
	tw := tabwriter.NewWriter(p.w, 0, 0, 1, ' ', 0)
	for _, f := range fs {
		fmt.Fprintf(tw, "%s:\t%s\n", f.key, cell(f.value))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write fields: %w", err)
	}
	return nil
}

// sentence prints text, or, in JSON, msg.
func (p *printer) sentence(msg proto.Message, text string) error {
	if p.json {
		return p.printJSON(msg)
	}
	_, err := fmt.Fprintln(p.w, escapeControl(text))
	return err
}

// streamHeader starts a stream of rows with fixed column widths (rows are
// printed as they come, so a tabwriter cannot align them). JSON streams have
// no header.
func (p *printer) streamHeader(widths []int, headers []string) error {
	if p.json {
		return nil
	}
	upper := make([]string, len(headers))
	for i, h := range headers {
		upper[i] = strings.ToUpper(h)
	}
	return p.streamText(widths, upper)
}

// streamRow prints one row padded to widths, or, in JSON, msg on one line.
func (p *printer) streamRow(msg proto.Message, widths []int, row []string) error {
	if p.json {
		b, err := marshalJSON(msg)
		if err != nil {
			return err
		}
		var line bytes.Buffer
		if err := json.Compact(&line, b); err != nil {
			return fmt.Errorf("compact json: %w", err)
		}
		line.WriteByte('\n')
		_, err = p.w.Write(line.Bytes())
		return err
	}
	return p.streamText(widths, cells(row))
}

// streamNote prints a line between rows; JSON streams skip it.
func (p *printer) streamNote(text string) error {
	if p.json {
		return nil
	}
	_, err := fmt.Fprintln(p.w, escapeControl(text))
	return err
}

func (p *printer) streamText(widths []int, row []string) error {
	var b strings.Builder
	for i, c := range row {
		if i < len(row)-1 && i < len(widths) {
			fmt.Fprintf(&b, "%-*s  ", widths[i], c)
			continue
		}
		b.WriteString(c)
	}
	b.WriteByte('\n')
	_, err := io.WriteString(p.w, b.String())
	return err
}

// printJSON writes v indented; see marshalJSON.
func (p *printer) printJSON(v any) error {
	b, err := marshalJSON(v)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("indent json: %w", err)
	}
	out.WriteByte('\n')
	_, err = p.w.Write(out.Bytes())
	return err
}

// marshalJSON encodes a proto message (protojson, proto field names), a list
// of them (an array, [] when empty) or a map of them (an object; nil values
// are left out).
func marshalJSON(v any) ([]byte, error) {
	switch v := v.(type) {
	case proto.Message:
		b, err := protoJSON.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode %s as json: %w", v.ProtoReflect().Descriptor().FullName(), err)
		}
		return b, nil
	case []proto.Message:
		raws := make([]json.RawMessage, 0, len(v))
		for _, m := range v {
			b, err := marshalJSON(m)
			if err != nil {
				return nil, err
			}
			raws = append(raws, b)
		}
		return json.Marshal(raws)
	case map[string]proto.Message:
		raws := make(map[string]json.RawMessage, len(v))
		for k, m := range v {
			if m == nil || !m.ProtoReflect().IsValid() {
				continue
			}
			b, err := marshalJSON(m)
			if err != nil {
				return nil, err
			}
			raws[k] = b
		}
		return json.Marshal(raws)
	}
	return nil, fmt.Errorf("encode %T as json: not a proto message", v)
}

// protoMessages converts a typed list of messages for printer.table.
func protoMessages[M proto.Message](ms []M) []proto.Message {
	out := make([]proto.Message, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

func cells(row []string) []string {
	out := make([]string, len(row))
	for i, c := range row {
		out[i] = cell(c)
	}
	return out
}

// cell shows an empty value as "-", so columns never look shifted, and
// escapes what a terminal would act on (see escapeControl).
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return escapeControl(s)
}

// escapeControl writes control and other non-printing characters (escape
// sequences, tabs, newlines, bidi overrides) and invalid UTF-8 the way a Go
// string literal does (\x1b, \t, \n, \u202e, \xff). Versions, tags,
// metadata and health output come from any registering process: printed
// raw, one could clear the operator's screen or fake table rows. JSON
// output escapes them already.
func escapeControl(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case unicode.IsPrint(r):
			b.WriteString(s[:size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		s = s[size:]
	}
	return b.String()
}
