package node

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/zrpcio/zrpc/acl"
	"github.com/zrpcio/zrpc/internal/warnrate"
	"github.com/zrpcio/zrpc/node/dns"
)

// startDNS serves `<service>.service.<dns_domain>` on dns_bind:dns_port
// over UDP and TCP (package dns), from the local replica; dns_port 0
// turns it off.
func (n *Node) startDNS() error {
	if n.cfg.DNSPort == 0 {
		return nil
	}
	token, err := n.cfg.dnsToken()
	if err != nil {
		return err
	}
	if n.aclResolver != nil && token == "" {
		n.log.Warn("DNS answers NXDOMAIN for every service: ACLs are on and no dns_token is set; give it the secret zrpcctl acl token create printed for a token with service read rules, in dns_token_file or ZRPC_DNS_TOKEN")
	}
	s, err := dns.Start(net.JoinHostPort(n.cfg.DNSBind, strconv.Itoa(n.cfg.DNSPort)), dns.Config{
		Domain:   n.cfg.DNSDomain,
		TTL:      n.cfg.DNSTTL,
		Registry: n.store.FSM(),
		CanRead:  n.dnsCanRead(token),
		Answered: func(rcode string) { n.metrics.dnsQueries.WithLabelValues(rcode).Inc() },
		Logger:   n.log,
	})
	if err != nil {
		return err
	}
	n.dns = s
	return nil
}

// dnsCanRead is what DNS may show with ACLs on: the services token
// (dns_token) may read, none without a token (DNS queries carry none). With ACLs off
// it is nil: everything.
func (n *Node) dnsCanRead(token string) func(service string) bool {
	if n.aclResolver == nil {
		return nil
	}
	if token == "" {
		return func(string) bool { return false }
	}
	hash := acl.HashSecret(token)
	// A token the ACLs do not have hides every service: said once a
	// minute, as a question may come every microsecond.
	unknown := warnrate.New(time.Minute, 1, time.Now)
	return func(service string) bool {
		// The resolver keeps the token's compiled rules while it and its
		// policies are unchanged, so this is a map lookup per query.
		a, _, err := n.aclResolver.Resolve(hash)
		if err != nil {
			if pass, held := unknown.Seen("dns_token"); pass {
				n.log.Warn("DNS answers NXDOMAIN for every service: its dns_token cannot be used; give it the secret zrpcctl acl token create printed for a token with service read rules",
					"err", err, "held", held)
			}
			return false
		}
		return a.Allow(acl.Service, service, acl.Read) == nil
	}
}

// DNSAddr is the host:port DNS answers on (UDP and TCP), "" when off.
func (n *Node) DNSAddr() string {
	if n.dns == nil {
		return ""
	}
	return n.dns.Addr()
}

// dnsToken returns dns_token, reading it from dns_token_file when that is
// set.
func (c *Config) dnsToken() (string, error) {
	if c.DNSTokenFile == "" {
		return c.DNSToken, nil
	}
	b, err := os.ReadFile(c.DNSTokenFile)
	if err != nil {
		return "", fmt.Errorf("dns_token_file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if acl.ValidateSecret("dns_token_file", token) != nil {
		return "", fmt.Errorf("dns_token_file: %s does not hold an ACL token secret (zrpcctl acl token create prints one)", c.DNSTokenFile)
	}
	return token, nil
}
