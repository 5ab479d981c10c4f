package node

import (
	"encoding/json"
	"net/http"
)

// serveConfig writes the agent's settings as a JSON object keyed by
// setting (the YAML keys), values formatted as `--<flag>` takes them, the
// value of every secret setting (encrypt, cluster_token, dns_token)
// replaced by REDACTED: what `zrpcctl debug` puts in its archive.
func (n *Node) serveConfig(w http.ResponseWriter, _ *http.Request) {
	out := map[string]string{"build": n.cfg.Build}
	for _, s := range Settings() {
		v := n.cfg.Get(s.Key)
		if s.Secret && v != "" {
			v = redacted
		}
		out[s.Key] = v
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}
