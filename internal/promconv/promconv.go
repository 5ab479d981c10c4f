// Package promconv holds zrpc's metrics to Prometheus's naming conventions
// (https://prometheus.io/docs/practices/naming/), for tests: Lint runs
// client_golang's promlint and adds the rules it leaves out, and
// PromQLMetricNames finds the metrics a PromQL expression (a dashboard's
// query) reads. It is not used by the agent itself.
package promconv

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// Prefix starts every metric zrpc defines.
const Prefix = "zrpc_"

// Lint reports every family of mfs that breaks a convention, one line
// each ("name: problem"), sorted. Besides promlint's checks (help text,
// counters end in _total and nothing else does, base units, snake_case,
// no type in the name) it checks that:
//   - a metric of time (its name or help speaks of a duration, latency,
//     age, delay, timeout or seconds) is in seconds: its name ends in
//     _seconds (_seconds_total for a counter), so no gauge of time goes
//     without a unit;
//   - a metric of size (its name or help speaks of bytes or a size) is in
//     bytes: _bytes (_bytes_total);
//   - the help text is not empty;
//   - the name starts with Prefix.
func Lint(mfs []*dto.MetricFamily) ([]string, error) {
	l := promlint.NewWithMetricFamilies(mfs)
	l.AddCustomValidations(lintPrefix, lintHelpText, lintTimeUnit, lintSizeUnit)
	problems, err := l.Lint()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(problems))
	for _, p := range problems {
		out = append(out, p.Metric+": "+p.Text)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func lintPrefix(mf *dto.MetricFamily) []error {
	if !strings.HasPrefix(mf.GetName(), Prefix) {
		return []error{fmt.Errorf("name does not start with %q", Prefix)}
	}
	return nil
}

func lintHelpText(mf *dto.MetricFamily) []error {
	if mf.Help != nil && strings.TrimSpace(mf.GetHelp()) == "" {
		return []error{fmt.Errorf("help text is empty: say what is counted and in which unit")}
	}
	return nil
}

var (
	// timeName and timeHelp mark a metric of time.
	timeName = regexp.MustCompile(`(^|_)(duration|latency|seconds|age|delay|timeout|elapsed|uptime|time)(_|$)`)
	timeHelp = regexp.MustCompile(`(?i)\b(duration|latency|seconds|elapsed|how long)\b`)
	// sizeName and sizeHelp mark a metric of size.
	sizeName = regexp.MustCompile(`(^|_)(bytes|size)(_|$)`)
	sizeHelp = regexp.MustCompile(`(?i)\bbytes\b`)
)

// unitSuffix is the name without _total, so a counter's unit is checked
// like any other's.
func unitSuffix(mf *dto.MetricFamily) string {
	n := mf.GetName()
	if mf.GetType() == dto.MetricType_COUNTER {
		n = strings.TrimSuffix(n, "_total")
	}
	return n
}

func lintTimeUnit(mf *dto.MetricFamily) []error {
	n := unitSuffix(mf)
	if !timeName.MatchString(n) && !timeHelp.MatchString(mf.GetHelp()) {
		return nil
	}
	if !strings.HasSuffix(n, "_seconds") {
		return []error{fmt.Errorf("a metric of time must be in seconds: name it ..._seconds%s", totalIfCounter(mf))}
	}
	return nil
}

func lintSizeUnit(mf *dto.MetricFamily) []error {
	n := unitSuffix(mf)
	if timeName.MatchString(n) {
		return nil // a duration whose help mentions bytes ("time to write N bytes")
	}
	if !sizeName.MatchString(n) && !sizeHelp.MatchString(mf.GetHelp()) {
		return nil
	}
	if !strings.HasSuffix(n, "_bytes") {
		return []error{fmt.Errorf("a metric of size must be in bytes: name it ..._bytes%s", totalIfCounter(mf))}
	}
	return nil
}

func totalIfCounter(mf *dto.MetricFamily) string {
	if mf.GetType() == dto.MetricType_COUNTER {
		return "_total"
	}
	return ""
}

// PromQL parsing: enough of the grammar to tell metric names from
// functions, keywords, label names and durations.
var (
	quoted      = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	matchers    = regexp.MustCompile(`\{[^}]*\}`)
	ranges      = regexp.MustCompile(`\[[^\]]*\]`)
	grouping    = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	variables   = regexp.MustCompile(`\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*`)
	labelValues = regexp.MustCompile(`\blabel_values\s*\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)`)
	identifier  = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	keywords    = map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true, "atan2": true,
	}
)

// PromQLMetricNames returns the metric names expr reads, sorted, without
// repeats: every identifier that is not a function (followed by '('), a
// keyword, a label name (inside {} or a by/without/on/ignoring list), a
// number or duration, or a Grafana variable ($x, ${x}). Grafana's
// label_values(metric, label) counts as its metric.
func PromQLMetricNames(expr string) []string {
	expr = labelValues.ReplaceAllString(expr, "$1$2")
	expr = quoted.ReplaceAllString(expr, `""`)
	expr = variables.ReplaceAllString(expr, " ")
	expr = matchers.ReplaceAllString(expr, " ")
	expr = ranges.ReplaceAllString(expr, " ")
	expr = grouping.ReplaceAllString(expr, " ")
	var names []string
	for _, loc := range identifier.FindAllStringIndex(expr, -1) {
		id := expr[loc[0]:loc[1]]
		if keywords[strings.ToLower(id)] {
			continue
		}
		if loc[0] > 0 && isNumberChar(expr[loc[0]-1]) {
			continue // the exponent or unit of a number: 1e3, 5m
		}
		rest := strings.TrimLeft(expr[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") {
			continue // a function
		}
		names = append(names, id)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

var (
	matcherLabel = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)`)
	groupingList = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
)

// PromQLLabelNames returns the label names expr matches on ({label="x"})
// or groups by (by, without, on, ignoring, group_left, group_right),
// sorted, without repeats.
func PromQLLabelNames(expr string) []string {
	expr = labelValues.ReplaceAllString(expr, "$1$2")
	expr = quoted.ReplaceAllString(expr, `""`)
	var names []string
	for _, m := range matchers.FindAllString(expr, -1) {
		for _, l := range matcherLabel.FindAllStringSubmatch(m, -1) {
			names = append(names, l[1])
		}
	}
	for _, g := range groupingList.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				names = append(names, l)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

func isNumberChar(c byte) bool { return '0' <= c && c <= '9' || c == '.' }

// Family returns the family a sample name in a query belongs to among
// families: the name itself, or for a histogram's or summary's _bucket,
// _sum and _count series the name without that suffix. ok is false when
// no family exports it.
func Family(name string, families map[string]dto.MetricType) (family string, ok bool) {
	if _, ok := families[name]; ok {
		return name, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, found := strings.CutSuffix(name, suffix)
		if !found {
			continue
		}
		t, ok := families[base]
		if !ok {
			continue
		}
		if t == dto.MetricType_HISTOGRAM || (t == dto.MetricType_SUMMARY && suffix != "_bucket") {
			return base, true
		}
	}
	return "", false
}
