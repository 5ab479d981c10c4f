package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zrpcio/zrpc/internal/pki"
	"github.com/zrpcio/zrpc/internal/testlog"
	"github.com/zrpcio/zrpc/internal/testwait"
	"github.com/zrpcio/zrpc/internal/tlsconf"
	"github.com/zrpcio/zrpc/rpc"
)

// The README's "Securing a cluster" section marks the blocks this file
// runs with these HTML comments.
const (
	readmeCommandsMarker = "<!-- e2e/securing_test.go runs this block"
	readmeConfigMarker   = "<!-- e2e/securing_test.go loads this block"
)

// TestSecuringAClusterAsTheReadmeSays runs the README's "Securing a
// cluster" commands, line by line and in order, in a temp dir with the
// built binaries on PATH, and checks what each one did. Agents run under
// the harness: on 127.0.0.1 with free ports instead of 127.0.0.x and the
// default ports, so the README's addresses are rewritten to theirs. Every
// README line must have its step here, in the same order, and the other
// way round: the test fails when the two drift apart.
func TestSecuringAClusterAsTheReadmeSays(t *testing.T) {
	w := newWalkthrough(t)
	lines := readmeLines(t, readmeCommandsMarker)
	steps := securingSteps()
	for i := 0; i < max(len(lines), len(steps)); i++ {
		switch {
		case i >= len(lines):
			t.Fatalf("README's block ends before step %d (%q)", i+1, steps[i].prefix)
		case i >= len(steps):
			t.Fatalf("README line %d %q has no step in this test", i+1, lines[i])
		case !strings.HasPrefix(lines[i], steps[i].prefix):
			t.Fatalf("README line %d is %q, want a line starting %q", i+1, lines[i], steps[i].prefix)
		}
		t.Logf("$ %s", lines[i])
		steps[i].run(w, lines[i])
	}
	w.serviceJoins()
}

// step is one README line: how it starts, and how to run and check it.
type step struct {
	prefix string
	run    func(w *walkthrough, line string)
}

// securingSteps are the README's commands in order, each with what must
// hold after it.
func securingSteps() []step {
	steps := []step{
		{"zrpcctl tls ca create", func(w *walkthrough, line string) {
			w.mustRun(line)
			w.cert("ca.pem")
			w.checkSecret("ca-key.pem")
		}},
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		steps = append(steps, step{"zrpcctl tls cert create --agent --name " + name + " ", func(w *walkthrough, line string) {
			w.mustRun(line)
			if c := w.cert(name + ".pem"); !pki.IsAgent(c) {
				w.t.Fatalf("%s.pem is not an agent certificate (DNS names %v)", name, c.DNSNames)
			}
			w.checkSecret(name + "-key.pem")
		}})
	}
	steps = append(steps,
		step{"zrpcctl tls cert create --client --name ops", func(w *walkthrough, line string) {
			w.mustRun(line)
			if c := w.cert("ops.pem"); pki.IsAgent(c) {
				w.t.Fatal("ops.pem is an agent certificate")
			}
			w.checkSecret("ops-key.pem")
		}},
		step{"(umask 077; zrpcd keygen > gossip.key)", func(w *walkthrough, line string) {
			w.mustRun(line)
			w.gossipKey = w.key("gossip.key")
		}},
		step{"zrpcd agent --name n1 ", (*walkthrough).startAgent},
		step{"zrpcd agent join 127.0.0.1:8402 --name n2 ", (*walkthrough).startAgent},
		step{"zrpcd agent join 127.0.0.1:8402 --name n3 ", (*walkthrough).startAgent},
		step{"export ZRPC_TLS_CA=", (*walkthrough).export},
		step{"(umask 077; zrpcctl acl bootstrap |", func(w *walkthrough, line string) {
			// Until the cluster has a leader, the bootstrap fails and the
			// file stays empty: run it again.
			w.waitFor("acl bootstrap writes the management token to mgmt.token", func() bool {
				w.run(line)
				return strings.HasPrefix(w.read("mgmt.token"), "zrpc_")
			})
			w.checkSecret("mgmt.token")
		}},
		step{"zrpcctl --token-file mgmt.token members", func(w *walkthrough, line string) {
			w.waitFor("three alive agents over TLS: one leader, two voters", func() bool {
				out, err := w.run(line)
				roles := map[string]int{}
				for _, r := range rows(out) {
					if len(r) >= 4 && r[2] == "alive" {
						roles[r[3]]++
					}
				}
				return err == nil && roles["leader"] == 1 && roles["voter"] == 2
			})
		}},
		step{"zrpcctl --token-file mgmt.token acl policy create svc-user ", func(w *walkthrough, line string) {
			w.mustContain(w.mustRun(line), "svc-user", `service "user." { write }`)
		}},
		step{"(umask 077; zrpcctl --token-file mgmt.token acl token create --policy svc-user |", func(w *walkthrough, line string) {
			w.mustRun(line)
			if tok := w.read("user.token"); !strings.HasPrefix(tok, "zrpc_") || tok == w.read("mgmt.token") {
				w.t.Fatalf("user.token holds %q, want a new token's secret", tok)
			}
			w.checkSecret("user.token")
		}},
		step{"ZRPC_TOKEN=$(cat user.token) zrpcctl service register user.rpc ", func(w *walkthrough, line string) {
			w.mustContain(w.mustRun(line), "registered user.rpc/user-1")
		}},
		step{"ZRPC_TOKEN=$(cat user.token) zrpcctl service register order.rpc ", func(w *walkthrough, line string) {
			_, err := w.run(line)
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				w.t.Fatalf("the svc-user token registered order.rpc (err %v), want a non-zero exit", err)
			}
			w.mustContain(err.Error(), `permission denied: token lacks service:write on "order.rpc"`)
		}},
		step{"(umask 077; zrpcd keygen > new.key)", func(w *walkthrough, line string) {
			w.mustRun(line)
			if w.newKey = w.key("new.key"); w.newKey == w.gossipKey {
				w.t.Fatal("keygen printed the same key twice")
			}
		}},
		step{"zrpcctl --token-file mgmt.token keyring install --key-file new.key", (*walkthrough).keyringStep},
		step{"zrpcctl --token-file mgmt.token keyring use --key-file new.key", (*walkthrough).keyringStep},
		step{"zrpcctl --token-file mgmt.token keyring remove --key-file gossip.key", (*walkthrough).keyringStep},
		step{"zrpcctl --token-file mgmt.token keyring list", func(w *walkthrough, line string) {
			out := w.mustRun(line)
			keys := rows(strings.SplitN(out, "\n\n", 2)[0]) // KEY AGENTS PRIMARY
			if len(keys) != 1 || len(keys[0]) < 3 || keys[0][0] != w.newKey || keys[0][1] != "3/3" || keys[0][2] != "3/3" {
				w.t.Fatalf("keyring list after the rotation, want only the new key on 3/3 agents, primary on 3/3:\n%s", out)
			}
		}},
		step{"mv new.key gossip.key", func(w *walkthrough, line string) {
			w.mustRun(line)
			if got := w.key("gossip.key"); got != w.newKey {
				w.t.Fatal("gossip.key is not the new key")
			}
		}},
		step{"zrpcctl tls cert create --agent --name n1 --ip 127.0.0.1 --force", func(w *walkthrough, line string) {
			old := w.cert("n1.pem").SerialNumber
			w.mustRun(line)
			if w.cert("n1.pem").SerialNumber.Cmp(old) == 0 {
				w.t.Fatal("n1.pem was not replaced")
			}
		}},
		step{"kill -HUP %1", func(w *walkthrough, line string) {
			a := w.job(line)
			reloads := strings.Count(a.log.String(), "TLS certificates reloaded")
			if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				w.t.Fatal(err)
			}
			w.waitFor(a.name+" reloads its certificates", func() bool {
				return strings.Count(a.log.String(), "TLS certificates reloaded") > reloads
			})
		}},
		step{"zrpcctl --token-file mgmt.token status", func(w *walkthrough, line string) {
			w.mustContain(w.mustRun(line), "Leader:")
			if got, want := w.servedSerial(w.byName["n1"]), w.cert("n1.pem").SerialNumber.String(); got != want {
				w.t.Fatalf("after SIGHUP n1 serves certificate %s, want the renewed %s", got, want)
			}
		}},
	)
	return steps
}

// walkthrough is the state of the README's commands: their directory,
// what they exported, and the agents they started.
type walkthrough struct {
	t                 *testing.T
	dir, binDir       string
	env               []string // KEY=VALUE exported by the block
	agents            []*agent // in start order: %1 is the first
	byName            map[string]*agent
	addrs             []string // README address, the agent's real one, ...
	gossipKey, newKey string
}

func newWalkthrough(t *testing.T) *walkthrough {
	zrpcd, _ := binaries(t)
	return &walkthrough{t: t, dir: t.TempDir(), binDir: filepath.Dir(zrpcd), byName: map[string]*agent{}}
}

// translate rewrites the README's agent addresses into the real ones.
func (w *walkthrough) translate(line string) string {
	return strings.NewReplacer(w.addrs...).Replace(line)
}

// run runs line with bash in the walkthrough's directory, the binaries
// first on PATH and zrpcctl's default address (127.0.0.1:8400) pointing
// at n1. Its error carries stderr.
func (w *walkthrough) run(line string) (string, error) {
	cmd := exec.Command("bash", "-c", w.translate(line))
	cmd.Dir = w.dir
	cmd.Env = append(os.Environ(), "PATH="+w.binDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"ZRPC_ADDR="+w.translate("127.0.0.1:8400"))
	cmd.Env = append(cmd.Env, w.env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, errb.String())
	}
	return out.String(), nil
}

func (w *walkthrough) mustRun(line string) string {
	w.t.Helper()
	out, err := w.run(line)
	if err != nil {
		w.t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return out
}

func (w *walkthrough) mustContain(text string, want ...string) {
	w.t.Helper()
	for _, s := range want {
		if !strings.Contains(text, s) {
			w.t.Fatalf("want %q in:\n%s", s, text)
		}
	}
}

func (w *walkthrough) waitFor(what string, cond func() bool) {
	w.t.Helper()
	waitFor(w.t, 60*time.Second, what, cond)
}

func (w *walkthrough) path(name string) string { return filepath.Join(w.dir, name) }

// read returns the file's contents without surrounding white space.
func (w *walkthrough) read(name string) string {
	w.t.Helper()
	data, err := os.ReadFile(w.path(name))
	if err != nil {
		w.t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// checkSecret fails unless only its owner may read the file.
func (w *walkthrough) checkSecret(name string) {
	w.t.Helper()
	fi, err := os.Stat(w.path(name))
	if err != nil {
		w.t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		w.t.Fatalf("%s has mode %o, want 600", name, perm)
	}
}

// cert parses a PEM certificate file of the walkthrough.
func (w *walkthrough) cert(name string) *x509.Certificate {
	w.t.Helper()
	data, err := os.ReadFile(w.path(name))
	if err != nil {
		w.t.Fatal(err)
	}
	c, err := pki.ParseCertificate(data)
	if err != nil {
		w.t.Fatalf("%s: %v", name, err)
	}
	return c
}

// key checks a gossip key file (mode 0600, 32 bytes in base64) and
// returns the key.
func (w *walkthrough) key(name string) string {
	w.t.Helper()
	w.checkSecret(name)
	k := w.read(name)
	if raw, err := base64.StdEncoding.DecodeString(k); err != nil || len(raw) != 32 {
		w.t.Fatalf("%s holds %q, want 32 bytes in base64", name, k)
	}
	return k
}

// export applies `export K=V ...`; relative file names stay relative to
// the walkthrough's directory, where every command runs.
func (w *walkthrough) export(line string) {
	words := strings.Fields(strings.SplitN(line, "#", 2)[0])
	for _, kv := range words[1:] {
		if !strings.Contains(kv, "=") {
			w.t.Fatalf("export %q: want KEY=VALUE", kv)
		}
		w.env = append(w.env, kv)
	}
}

// startAgent runs `zrpcd agent [join ADDR...] FLAGS... 2> LOG &` under
// the harness: its --data-dir becomes a temp dir, --bind, --http-bind and
// --dns-bind give way to 127.0.0.1 and free ports (DNS off), and files of
// the walkthrough become absolute paths. The harness keeps the agent's log.
func (w *walkthrough) startAgent(line string) {
	w.t.Helper()
	words := strings.Fields(line)
	if len(words) < 2 || words[0] != "zrpcd" || words[1] != "agent" {
		w.t.Fatalf("%q: want zrpcd agent", line)
	}
	words = words[2:]
	var join []string
	if len(words) > 0 && words[0] == "join" {
		for words = words[1:]; len(words) > 0 && !strings.HasPrefix(words[0], "-"); words = words[1:] {
			join = append(join, w.translate(words[0]))
		}
	}
	name, bind := "", "127.0.0.1"
	var extra, ctlArgs []string
	for i := 0; i < len(words); i++ {
		word := words[i]
		value := func() string {
			if i+1 >= len(words) {
				w.t.Fatalf("%q: %s without a value", line, word)
			}
			i++
			return words[i]
		}
		switch word {
		case "&":
		case "2>":
			value()
		case "--name":
			name = value()
		case "--bind":
			bind = value()
		case "--data-dir", "--http-bind", "--dns-bind":
			value()
		case "--tls-ca", "--tls-cert", "--tls-key":
			f := []string{word, w.path(value())}
			extra, ctlArgs = append(extra, f...), append(ctlArgs, f...)
		default:
			if !strings.HasPrefix(word, "-") && exists(w.path(word)) {
				word = w.path(word)
			}
			extra = append(extra, word)
		}
	}
	if name == "" {
		w.t.Fatalf("%q: no --name", line)
	}
	a := newAgent(w.t, name, extra...)
	a.ctlArgs = ctlArgs
	a.start(join...)
	w.agents = append(w.agents, a)
	w.byName[name] = a
	w.addrs = append(w.addrs,
		bind+":8400", a.grpcAddr(),
		bind+":8401", "127.0.0.1:"+strconv.Itoa(a.raftPort),
		bind+":8402", a.gossipAddr())
}

// job returns the agent `kill -SIG %N` means.
func (w *walkthrough) job(line string) *agent {
	w.t.Helper()
	_, spec, ok := strings.Cut(strings.Fields(line)[2], "%")
	n, err := strconv.Atoi(spec)
	if !ok || err != nil || n < 1 || n > len(w.agents) {
		w.t.Fatalf("%q: want %%N of one of the %d agents started", line, len(w.agents))
	}
	return w.agents[n-1]
}

// keyringStep runs a keyring change and checks that it reports every
// agent, each ok.
func (w *walkthrough) keyringStep(line string) {
	w.t.Helper()
	out := w.mustRun(line)
	got := map[string]string{} // AGENT RESULT ERROR
	for _, r := range rows(out) {
		if len(r) >= 2 {
			got[r[0]] = r[1]
		}
	}
	if len(got) != len(w.agents) {
		w.t.Fatalf("%s reports %d agents, want %d:\n%s", line, len(got), len(w.agents), out)
	}
	for _, a := range w.agents {
		if got[a.name] != "ok" {
			w.t.Fatalf("%s: agent %s reports %q, want ok:\n%s", line, a.name, got[a.name], out)
		}
	}
}

// opsTLS is zrpcctl's TLS client config from the walkthrough's files.
func (w *walkthrough) opsTLS() *tls.Config {
	w.t.Helper()
	cfg, err := tlsconf.Client(tlsconf.Files{CA: w.path("ca.pem"), Cert: w.path("ops.pem"), Key: w.path("ops-key.pem")}, tlsconf.AgentServerName)
	if err != nil {
		w.t.Fatal(err)
	}
	return cfg
}

// servedSerial opens a new TLS connection to a's gRPC port and returns
// the serial number of the certificate it served.
func (w *walkthrough) servedSerial(a *agent) string {
	w.t.Helper()
	conn, err := tls.Dial("tcp", a.grpcAddr(), w.opsTLS())
	if err != nil {
		w.t.Fatalf("TLS to %s: %v", a.name, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// serviceJoins runs a service with package rpc from the README's YAML,
// with the certificate the README says to make and the svc-user token:
// it registers user.rpc over mutual TLS with the agents.
func (w *walkthrough) serviceJoins() {
	w.t.Helper()
	w.mustRun("zrpcctl tls cert create --service --name user.rpc")
	if err := os.WriteFile(w.path("user.yaml"), []byte(readmeFence(w.t, readmeConfigMarker)), 0o644); err != nil {
		w.t.Fatal(err)
	}
	w.t.Chdir(w.dir) // the YAML names its files relative to where the service runs
	cfg := rpc.DefaultServerConfig()
	if err := rpc.LoadConfig("user.yaml", &cfg); err != nil {
		w.t.Fatalf("the README's service config: %v", err)
	}
	if !cfg.TLS.Enabled() || cfg.TokenFile == "" {
		w.t.Fatalf("the README's service config sets TLS %+v and token_file %q, want both", cfg.TLS, cfg.TokenFile)
	}
	cfg.ListenOn = "127.0.0.1:" + strconv.Itoa(freePort(w.t)) // the README's port may be taken here
	cfg.Agents = []string{w.byName["n1"].grpcAddr()}
	cfg.DrainDelay = 0
	srv, err := rpc.NewServer(cfg, rpc.WithServerLogger(testlog.New(w.t, "user.rpc")), rpc.WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		w.t.Fatalf("start user.rpc with the README's config: %v", err)
	}
	w.t.Cleanup(func() { srv.Stop(context.Background()) })
	testwait.ForExplained(w.t, 60*time.Second, "user.rpc at "+srv.Addr()+" in the registry", func() bool {
		out, err := w.run("zrpcctl --token-file mgmt.token service get user.rpc")
		return err == nil && strings.Contains(out, srv.Addr())
	}, func() string {
		out, err := w.run("zrpcctl --token-file mgmt.token service get user.rpc")
		return fmt.Sprintf(": %v\n%s", err, out)
	})
}

// readmeFence returns the body of the first fenced block after marker in
// the repo's README.md.
func readmeFence(t *testing.T, marker string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(data), marker)
	if !ok {
		t.Fatalf("README.md has no block marked %q", marker)
	}
	_, after, ok = strings.Cut(after, "\n```")
	if ok {
		_, after, ok = strings.Cut(after, "\n") // the fence's info string
	}
	body, _, closed := strings.Cut(after, "\n```")
	if !ok || !closed {
		t.Fatalf("README.md: no fenced block after %q", marker)
	}
	return body + "\n"
}

// readmeLines returns the commands of the block after marker: lines ending
// in \ joined with the next, blank lines left out.
func readmeLines(t *testing.T, marker string) []string {
	t.Helper()
	var lines []string
	cur := ""
	for l := range strings.SplitSeq(readmeFence(t, marker), "\n") {
		if c, ok := strings.CutSuffix(l, `\`); ok {
			cur += c
			continue
		}
		if cmd := strings.TrimSpace(cur + l); cmd != "" {
			lines = append(lines, cmd)
		}
		cur = ""
	}
	return lines
}
