package node

import (
	"net/http"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/node/grpcapi"
	"github.com/zrpcio/zrpc/node/ui"
)

// newUI builds the web UI on this agent: it reads the registry replica,
// the Status service and the blob store in process, and with ACLs on
// resolves tokens as the rest of the HTTP endpoint does (httpauth.go).
func (n *Node) newUI() *ui.UI {
	cfg := ui.Config{Replica: n.store.FSM(), Status: n.newStatus(), Blobs: n.blobs, ValidService: grpcapi.ValidServiceName, Logger: n.log,
		// A live stream is a watch: it takes a slot of max_watches, once
		// the Registry service is built.
		TakeWatch: func() (func(), error) {
			if r := n.metrics.registry.Load(); r != nil {
				return r.TakeWatch()
			}
			return func() {}, nil
		}}
	if n.aclResolver != nil {
		cfg.Authorize = func(w http.ResponseWriter, r *http.Request, need string) (acl.Authorizer, bool) {
			a, _, ok := n.authorizeHTTP(w, r, need)
			return a, ok
		}
	}
	return ui.New(cfg)
}
