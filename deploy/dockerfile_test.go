package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd   string // upper case: FROM, RUN, ...
	args  string
	stage string // the stage it belongs to (FROM ... AS stage)
}

func parseDockerfile(t *testing.T) (instrs []instruction, comments string) {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var cur, stage string
	var notes strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			notes.WriteString(trimmed + "\n")
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur += cont + " "
			continue
		}
		cur += trimmed
		if cur == "" {
			continue
		}
		cmd, args, _ := strings.Cut(cur, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			f := strings.Fields(args)
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stage = f[2]
			} else {
				stage = ""
			}
		}
		instrs = append(instrs, instruction{cmd: cmd, args: strings.TrimSpace(args), stage: stage})
		cur = ""
	}
	return instrs, notes.String()
}

// TestDockerfile: static binaries on a minimal base, run as non-root, the
// agent's ports exposed, no HEALTHCHECK (Kubernetes probes), and the images
// the manifests run are the ones it documents building.
func TestDockerfile(t *testing.T) {
	instrs, comments := parseDockerfile(t)
	stages := map[string][]instruction{}
	var order []string
	for _, in := range instrs {
		if in.cmd == "HEALTHCHECK" {
			t.Errorf("HEALTHCHECK: leave health to Kubernetes' probes of /readyz and /healthz")
		}
		if _, ok := stages[in.stage]; !ok {
			order = append(order, in.stage)
		}
		stages[in.stage] = append(stages[in.stage], in)
	}
	if len(order) == 0 || order[len(order)-1] != "zrpcd" {
		t.Fatalf("stages %v: the last (default) stage must be zrpcd", order)
	}
	builds := 0
	for _, in := range stages["build"] {
		if in.cmd == "ENV" && in.args == "CGO_ENABLED=0" {
			builds |= 1
		}
		if in.cmd != "RUN" {
			continue
		}
		for _, m := range regexp.MustCompile(`go build [^&]*?(\./[\w/]+)`).FindAllStringSubmatch(in.args, -1) {
			builds |= 2
			if !isMainPackage(t, filepath.Join("..", m[1])) {
				t.Errorf("go build %s: no main package there", m[1])
			}
		}
	}
	if builds != 3 {
		t.Errorf("the build stage must set CGO_ENABLED=0 and go build the binaries (static binaries)")
	}
	for _, name := range []string{"zrpcd", "user-example"} {
		st := stages[name]
		if len(st) == 0 {
			t.Errorf("no stage %s", name)
			continue
		}
		base := strings.Fields(st[0].args)[0]
		if base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/static") {
			t.Errorf("stage %s is based on %s; want distroless static or scratch", name, base)
		}
		user := ""
		for _, in := range st {
			if in.cmd == "USER" {
				user = in.args
			}
		}
		if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
			t.Errorf("stage %s runs as %q; want a non-root USER", name, user)
		}
	}

	exposed := map[string]bool{}
	for _, in := range stages["zrpcd"] {
		if in.cmd == "EXPOSE" {
			for _, p := range strings.Fields(in.args) {
				exposed[p] = true
			}
		}
	}
	objs := decodeManifests(t)
	checked := map[string]bool{}
	for _, w := range workloads(objs) {
		for _, c := range w.pod.Spec.Containers {
			if c.Name == "zrpcd" {
				for _, p := range c.Ports {
					proto := strings.ToLower(string(p.Protocol))
					if proto == "" {
						proto = strings.ToLower(string(corev1.ProtocolTCP))
					}
					if key := strconv.Itoa(int(p.ContainerPort)) + "/" + proto; !exposed[key] {
						t.Errorf("%s exposes %s, which the image does not EXPOSE", w, key)
					}
				}
			}
		}
		for _, c := range append(slices.Clone(w.pod.Spec.InitContainers), w.pod.Spec.Containers...) {
			if !strings.HasPrefix(c.Image, "zrpcio/") || checked[c.Image] {
				continue
			}
			checked[c.Image] = true
			if !strings.Contains(comments, "-t "+c.Image+" ") {
				t.Errorf("%s runs image %s, which the Dockerfile does not say how to build (-t %s)", w, c.Image, c.Image)
				continue
			}
			// The binaries report the VERSION they were built with; the
			// documented build gives it the image's tag.
			_, tag, _ := strings.Cut(c.Image, ":")
			for _, line := range strings.Split(comments, "\n") {
				if strings.Contains(line, "-t "+c.Image+" ") && !strings.Contains(line, "--build-arg VERSION="+tag+" ") {
					t.Errorf("Dockerfile: %q builds %s without --build-arg VERSION=%s: its binaries would report the default VERSION", strings.TrimPrefix(line, "# "), c.Image, tag)
				}
			}
		}
	}
}

// isMainPackage reports whether dir holds Go files of package main.
func isMainPackage(t *testing.T, dir string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`(?m)^package main\b`).Match(b) {
			return true
		}
	}
	return false
}
