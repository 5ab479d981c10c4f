package deploy

import (
	"net/netip"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/zrpcio/zrpc/node"
	"github.com/zrpcio/zrpc/rpc"
)

// agentSettings returns the agent settings container c sets (by YAML key),
// from its ZRPC_* environment and its `zrpcd agent --key=value` arguments,
// with the downward API's values filled in. It fails the test for an
// environment variable or flag zrpcd does not have, a value it refuses, a
// configuration node.Config.Validate refuses, or an agent bound to
// loopback (unreachable from other pods and from the kubelet's probes).
func agentSettings(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	byEnv, byFlag := map[string]node.Setting{}, map[string]node.Setting{}
	for _, s := range node.Settings() {
		byEnv[s.Env], byFlag[s.Flag] = s, s
	}
	env := expandedEnv(t, c)
	set := map[string]string{}
	for name, v := range env {
		if !strings.HasPrefix(name, node.EnvPrefix) {
			continue
		}
		s, ok := byEnv[name]
		if !ok {
			t.Errorf("container %s: env %s is not a zrpcd setting", c.Name, name)
			continue
		}
		set[s.Key] = v
	}
	if len(c.Command) > 0 || len(c.Args) == 0 || c.Args[0] != "agent" {
		t.Fatalf("container %s: want the image's entrypoint (zrpcd) with args starting with agent; got command %q args %q", c.Name, c.Command, c.Args)
	}
	for _, a := range c.Args[1:] {
		a = expand(t, c.Name, a, env)
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		s, ok := byFlag[name]
		switch {
		case !strings.HasPrefix(a, "--") || !ok:
			t.Errorf("container %s: argument %q is not a zrpcd agent flag", c.Name, a)
			continue
		case !hasValue && s.Type != "bool":
			t.Errorf("container %s: write %q as --%s=VALUE", c.Name, a, name)
			continue
		case !hasValue:
			value = "true"
		}
		set[s.Key] = value // a flag wins over the environment
	}
	cfg := node.Default()
	for k, v := range set {
		if err := cfg.Set(k, v); err != nil {
			t.Errorf("container %s: %s=%q: %v", c.Name, k, v, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("container %s: zrpcd would refuse its configuration:\n%v", c.Name, err)
	}
	for _, key := range []string{"bind", "http_bind"} {
		if ip, err := netip.ParseAddr(set[key]); err != nil || ip.IsLoopback() {
			t.Errorf("container %s: %s %q must be set and not loopback in a pod", c.Name, key, set[key])
		}
	}
	return set
}

// checkServiceConfig decodes the example service's config as rpc does
// (unknown keys refused), with ${POD_IP} replaced as the init container
// replaces it, and checks what registering through the node's agent
// needs.
func checkServiceConfig(t *testing.T, text string, d *appsv1.Deployment) {
	t.Helper()
	init := d.Spec.Template.Spec.InitContainers
	if len(init) != 1 || !strings.Contains(strings.Join(init[0].Command, " "), "${POD_IP}") {
		t.Fatalf("want one init container that replaces ${POD_IP} in the config")
	}
	if env := expandedEnv(t, init[0]); env["POD_IP"] != samplePodIP {
		t.Errorf("the init container's POD_IP is not the pod's IP (status.podIP)")
	}
	rendered := strings.ReplaceAll(text, "${POD_IP}", samplePodIP)
	cfg := rpc.DefaultServerConfig()
	dec := yaml.NewDecoder(strings.NewReader(rendered))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("user.yaml: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("user.yaml: rpc refuses it: %v", err)
	}
	if cfg.Advertise != samplePodIP+":8080" {
		t.Errorf("Advertise %q: want the pod's IP and the container port", cfg.Advertise)
	}
	if len(cfg.Agents) > 0 {
		t.Errorf("Agents %v: leave it empty so that $ZRPC_ADDR (the node's agent) is used", cfg.Agents)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if len(c.Ports) != 1 || !strings.HasSuffix(cfg.ListenOn, ":8080") || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("ListenOn %q and container ports %v disagree", cfg.ListenOn, c.Ports)
	}
	for _, f := range []string{cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key} {
		if m, ok := mountOf(c, f); !ok || volume(&d.Spec.Template, m.Name).Secret == nil {
			t.Errorf("TLS file %q is not on a Secret's mount", f)
		}
	}
	// The agents have ACLs on: registering needs a token, which comes from
	// a Secret's file (a ConfigMap is no place for a secret).
	if cfg.Token != "" {
		t.Errorf("user.yaml: token is set in the ConfigMap; use token_file on a Secret's mount")
	}
	if cfg.TokenFile == "" {
		t.Errorf("user.yaml: no token_file: the agents have ACLs on, and registering needs a token with service:write on %s", cfg.Name)
		return
	}
	m, ok := mountOf(c, cfg.TokenFile)
	var v *corev1.Volume
	if ok {
		v = volume(&d.Spec.Template, m.Name)
	}
	switch {
	case !ok || !m.ReadOnly || v == nil || v.Secret == nil:
		t.Errorf("token_file %q is not on a read-only Secret's mount", cfg.TokenFile)
	case v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0:
		t.Errorf("token_file %q: the Secret's file mode must give others nothing (defaultMode)", cfg.TokenFile)
	}
}
