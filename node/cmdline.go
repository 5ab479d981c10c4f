package node

import (
	"net/http"
	"os"
	"strings"
)

// redacted replaces a secret flag's value in /debug/pprof/cmdline.
const redacted = "REDACTED"

// serveCmdline is net/http/pprof's Cmdline with the values of secret flags
// (Setting.Secret: --encrypt) replaced by REDACTED: the endpoint would
// otherwise hand the gossip key to anyone who can reach the HTTP port.
func serveCmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(strings.Join(redactArgs(os.Args), "\x00")))
}

// redactArgs returns args with the value of every secret flag replaced,
// in each form a flag takes: --flag value, --flag=value, -flag value,
// -flag=value.
func redactArgs(args []string) []string {
	secret := map[string]bool{}
	for _, s := range Settings() {
		if s.Secret {
			secret[s.Flag] = true
		}
	}
	out := make([]string, len(args))
	copy(out, args)
	for i := 1; i < len(out); i++ {
		a := out[i]
		if a == "--" {
			break
		}
		name := strings.TrimLeft(a, "-")
		if name == a {
			continue // not a flag
		}
		if eq := strings.IndexByte(name, '='); eq >= 0 {
			if secret[name[:eq]] {
				out[i] = a[:len(a)-len(name)+eq+1] + redacted
			}
			continue
		}
		if secret[name] && i+1 < len(out) {
			out[i+1] = redacted
			i++
		}
	}
	return out
}
