package node

import (
	"fmt"
	"os"
	"strings"
)

// ConfigReference renders every agent setting as a Markdown table: its
// YAML key, flag, environment variable, default and meaning, as
// docs/configuration.md shows them (a test keeps that file in step).
func ConfigReference() string {
	var b strings.Builder
	b.WriteString(`# Agent configuration

Every setting of ` + "`zrpcd agent`" + ` (and ` + "`zrpcd agent join`" + `), from the one declaration
in ` + "`node.Config`" + `. Precedence: flag > ` + "`ZRPC_*`" + ` environment > YAML file
(` + "`--config`" + `) > default. Durations are Go durations (` + "`500ms`" + `, ` + "`2m`" + `); lists
are comma-separated in flags and the environment. Secret settings draw a
warning when given as a flag and are redacted in ` + "`/debug/pprof/cmdline`" + `.
The file is one YAML document of at most 1 MiB, a regular file or a pipe (` + "`--config <(...)`" + `, read once); a
setting that takes a number takes a whole number (` + "`1e9`" + ` is one).

This file is generated: ` + "`make docs`" + ` rewrites it.

| YAML key | flag | environment | default | meaning |
|---|---|---|---|---|
`)
	def := Default()
	host, _ := os.Hostname()
	for _, s := range Settings() {
		v := def.Get(s.Key)
		switch {
		case s.Key == "name" && v == host:
			v = "the host name" // the default differs per machine
		case s.Secret && v != "":
			v = "(secret)"
		case v == "":
			v = "–"
		default:
			v = "`" + v + "`"
		}
		help := strings.ReplaceAll(s.Help, "|", `\|`)
		if s.Secret {
			help += " (secret)"
		}
		fmt.Fprintf(&b, "| `%s` | `--%s` | `%s` | %s | %s |\n", s.Key, s.Flag, s.Env, v, help)
	}
	return b.String()
}
