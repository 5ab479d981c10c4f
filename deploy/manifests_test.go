// Package deploy holds the tests of zrpc's deployment files: the
// Kubernetes manifests in kubernetes/ and the Dockerfile. It is a module of
// its own so that k8s.io/api never enters zrpc's main module.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/zrpcio/zrpc/node"
)

// manifestsDir holds the Kubernetes manifests, one or more documents per
// file.
const manifestsDir = "kubernetes"

// object is one decoded manifest document.
type object struct {
	file string
	kind string
	name string
	obj  any
}

func (o object) String() string { return fmt.Sprintf("%s %s (%s)", o.kind, o.name, o.file) }

// kinds maps each apiVersion and kind the manifests may use to a new
// value of its Go type. A kind missing here fails the test: add it with
// its k8s.io/api type.
var kinds = map[string]func() any{
	"v1/Namespace":                  func() any { return &corev1.Namespace{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"apps/v1/StatefulSet":           func() any { return &appsv1.StatefulSet{} },
	"apps/v1/DaemonSet":             func() any { return &appsv1.DaemonSet{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

// decodeManifests decodes every document of every manifest strictly: a
// field the Kubernetes type does not have (a typo, a wrong nesting), a
// duplicated field or a value of the wrong type fails. The files are read
// once; each test that needs them fails on a bad one.
func decodeManifests(t *testing.T) []object {
	t.Helper()
	objs, errs := manifests()
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return objs
}

var manifests = sync.OnceValues(func() ([]object, []error) {
	files, err := filepath.Glob(filepath.Join(manifestsDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, []error{fmt.Errorf("no manifests in %s: %v", manifestsDir, err)}
	}
	var objs []object
	var errs []error
	for _, f := range files {
		docs, err := splitDocuments(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		for i, doc := range docs {
			o, err := decodeDocument(doc)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s, document %d: %w", f, i+1, err))
				continue
			}
			o.file = filepath.Base(f)
			objs = append(objs, o)
		}
	}
	return objs, errs
})

// splitDocuments returns the non-empty YAML documents of file.
func splitDocuments(file string) ([][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

func decodeDocument(doc []byte) (object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return object{}, err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return object{}, fmt.Errorf("apiVersion %q kind %q is not one the test knows: add its k8s.io/api type to kinds", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	meta := obj.(metav1.Object)
	if meta.GetName() == "" {
		return object{}, fmt.Errorf("%s has no metadata.name", tm.Kind)
	}
	if tm.Kind != "Namespace" && meta.GetNamespace() != "zrpc" {
		return object{}, fmt.Errorf("%s %s: namespace %q, want zrpc (namespace.yaml)", tm.Kind, meta.GetName(), meta.GetNamespace())
	}
	return object{kind: tm.Kind, name: meta.GetName(), obj: obj}, nil
}

// workload is a pod template with what owns it.
type workload struct {
	object
	pod *corev1.PodTemplateSpec
}

func workloads(objs []object) []workload {
	var out []workload
	for _, o := range objs {
		switch w := o.obj.(type) {
		case *appsv1.StatefulSet:
			out = append(out, workload{o, &w.Spec.Template})
		case *appsv1.DaemonSet:
			out = append(out, workload{o, &w.Spec.Template})
		case *appsv1.Deployment:
			out = append(out, workload{o, &w.Spec.Template})
		}
	}
	return out
}

func find[T any](t *testing.T, objs []object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.obj.(T); ok && o.name == name {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T named %s in the manifests", zero, name)
	return zero
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := decodeManifests(t)
	for _, want := range []string{"Namespace", "Service", "StatefulSet", "DaemonSet", "Deployment", "PodDisruptionBudget", "ConfigMap"} {
		if !slices.ContainsFunc(objs, func(o object) bool { return o.kind == want }) {
			t.Errorf("no %s among the manifests", want)
		}
	}
	// The decoder refuses what a typo makes.
	for _, bad := range []string{
		"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x, namespace: zrpc}\nspec: {replica: 3}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: zrpc}\nspec: {ports: [{port: http}]}\n",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: zrpc, name: y}\n",
		"apiVersion: apps/v1beta1\nkind: StatefulSet\nmetadata: {name: x, namespace: zrpc}\n",
	} {
		if _, err := decodeDocument([]byte(bad)); err == nil {
			t.Errorf("decoded without error:\n%s", bad)
		}
	}
}

// TestWorkloadsRunLockedDown: every pod runs as non-root, and every
// container with a read-only root file system, no privilege escalation and
// no capabilities; only an init container that chowns a host directory
// runs as root, with CHOWN alone.
func TestWorkloadsRunLockedDown(t *testing.T) {
	for _, w := range workloads(decodeManifests(t)) {
		psc := w.pod.Spec.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
			t.Errorf("%s: the pod's securityContext must set runAsNonRoot: true and a non-zero runAsUser", w)
		}
		check := func(c corev1.Container, init bool) {
			sc := c.SecurityContext
			where := fmt.Sprintf("%s, container %s", w, c.Name)
			if sc == nil {
				t.Errorf("%s: no securityContext", where)
				return
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: readOnlyRootFilesystem must be true", where)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation must be false", where)
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("%s: capabilities must drop ALL", where)
			}
			root := sc.RunAsUser != nil && *sc.RunAsUser == 0
			if root && !(init && slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN"}) && c.Command[0] == "chown") {
				t.Errorf("%s: runs as root; only an init container that chowns, with CHOWN alone, may", where)
			}
			if !root && sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: adds capabilities %v", where, sc.Capabilities.Add)
			}
			if !init && (c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero()) {
				t.Errorf("%s: needs CPU and memory requests and a memory limit", where)
			}
		}
		for _, c := range w.pod.Spec.InitContainers {
			check(c, true)
		}
		for _, c := range w.pod.Spec.Containers {
			check(c, false)
		}
	}
}

// TestServicesMatchTheirPods: each Service selects pods of a workload, and
// each of its ports targets a container port of those pods with the same
// protocol and number.
func TestServicesMatchTheirPods(t *testing.T) {
	objs := decodeManifests(t)
	ws := workloads(objs)
	for _, o := range objs {
		svc, ok := o.obj.(*corev1.Service)
		if !ok {
			continue
		}
		var pods []workload
		for _, w := range ws {
			if len(svc.Spec.Selector) > 0 && selects(svc.Spec.Selector, w.pod.Labels) {
				pods = append(pods, w)
			}
		}
		if len(pods) == 0 {
			t.Errorf("%s selects no workload's pods (selector %v)", o, svc.Spec.Selector)
			continue
		}
		for _, w := range pods {
			for _, sp := range svc.Spec.Ports {
				cp, ok := containerPort(w.pod, sp.TargetPort, sp.Protocol)
				switch {
				case !ok:
					t.Errorf("%s port %s targets %s/%s, which %s's containers do not expose", o, sp.Name, sp.TargetPort.String(), sp.Protocol, w)
				case cp.ContainerPort != sp.Port:
					t.Errorf("%s port %s is %d but %s's container port %s is %d", o, sp.Name, sp.Port, w, cp.Name, cp.ContainerPort)
				}
			}
		}
	}
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func containerPort(pod *corev1.PodTemplateSpec, target intstr.IntOrString, proto corev1.Protocol) (corev1.ContainerPort, bool) {
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			pp := p.Protocol
			if pp == "" {
				pp = corev1.ProtocolTCP
			}
			if pp != proto {
				continue
			}
			if (target.Type == intstr.String && p.Name == target.StrVal) || (target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
				return p, true
			}
		}
	}
	return corev1.ContainerPort{}, false
}

// TestAgentStatefulSet: the shape docs/kubernetes.md relies on.
func TestAgentStatefulSet(t *testing.T) {
	objs := decodeManifests(t)
	sts := find[*appsv1.StatefulSet](t, objs, "zrpc")
	headless := find[*corev1.Service](t, objs, sts.Spec.ServiceName)
	if headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("service %s: must be headless (clusterIP: None) with publishNotReadyAddresses: true, so agents find each other before they are ready", headless.Name)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("replicas: want 3")
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q: want Parallel (with OrderedReady the second agent waits for the first to be ready, which needs a leader)", sts.Spec.PodManagementPolicy)
	}
	c := zrpcd(t, sts.Spec.Template)
	cfg := agentSettings(t, c)
	if want := "zrpc.zrpc.svc:8402"; !slices.Contains(strings.Split(cfg["join"], ","), want) {
		t.Errorf("join %q: want the headless Service's name %s", cfg["join"], want)
	}
	if cfg["bootstrap_expect"] != "3" {
		t.Errorf("bootstrap_expect %q: want 3, the replicas", cfg["bootstrap_expect"])
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("want one volumeClaimTemplate (the data dir)")
	}
	claim := sts.Spec.VolumeClaimTemplates[0]
	if claim.Spec.Resources.Requests.Storage().IsZero() {
		t.Errorf("volumeClaimTemplate %s requests no storage", claim.Name)
	}
	checkDataDir(t, c, cfg, claim.Name)
	if psc := sts.Spec.Template.Spec.SecurityContext; psc != nil && psc.FSGroup != nil &&
		(psc.FSGroupChangePolicy == nil || *psc.FSGroupChangePolicy != corev1.FSGroupChangeOnRootMismatch) {
		t.Errorf("fsGroup without fsGroupChangePolicy: OnRootMismatch: the kubelet changes the group of every file of the data volume (every blob shard) at each start of an agent")
	}
	if cfg["name"] != downward["metadata.name"] {
		t.Errorf("name %q: want the pod's name (metadata.name), the identity its PersistentVolumeClaim's data belongs to", cfg["name"])
	}
	checkProbes(t, c)

	checkVotersOnDistinctNodes(t, objs, sts)

	pdb := find[*policyv1.PodDisruptionBudget](t, objs, "zrpc")
	if pdb.Spec.MinAvailable != nil || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.Type != intstr.Int || pdb.Spec.MaxUnavailable.IntVal != 1 {
		t.Errorf("PodDisruptionBudget: want maxUnavailable: 1 and no minAvailable (a fixed minAvailable lets a drain take a quorum of the voters once the StatefulSet is scaled up)")
	}
	if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, sts.Spec.Template.Labels) {
		t.Errorf("PodDisruptionBudget does not select the StatefulSet's pods")
	}
}

// checkVotersOnDistinctNodes: the scheduler must never put two of the
// StatefulSet's agents on one node (a required anti-affinity on the
// node's host name selecting the StatefulSet's own pods), or one node's
// loss takes two voters of three, and the quorum with them. A preferred
// anti-affinity does not hold when nodes are short. The term must select
// no other workload's pods: one that also selected the DaemonSet's agents,
// which run on every node, would leave the StatefulSet's pods no node.
func checkVotersOnDistinctNodes(t *testing.T, objs []object, sts *appsv1.StatefulSet) {
	t.Helper()
	aff := sts.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil {
		t.Errorf("StatefulSet %s: no podAntiAffinity; two voters could share a node", sts.Name)
		return
	}
	for _, term := range aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		sel := term.LabelSelector
		if term.TopologyKey != "kubernetes.io/hostname" || sel == nil || len(sel.MatchExpressions) > 0 || len(sel.MatchLabels) == 0 ||
			!selects(sel.MatchLabels, sts.Spec.Template.Labels) {
			continue
		}
		for _, w := range workloads(objs) {
			if w.obj != any(sts) && selects(sel.MatchLabels, w.pod.Labels) {
				t.Errorf("StatefulSet %s: its podAntiAffinity also selects the pods of %s", sts.Name, w)
			}
		}
		return
	}
	t.Errorf("StatefulSet %s: want a requiredDuringSchedulingIgnoredDuringExecution podAntiAffinity on kubernetes.io/hostname selecting its own pods, so that no node holds two voters", sts.Name)
}

// TestNodeAgentDaemonSet: one agent per node on the host network, joining
// the StatefulSet's agents.
func TestNodeAgentDaemonSet(t *testing.T) {
	objs := decodeManifests(t)
	ds := find[*appsv1.DaemonSet](t, objs, "zrpc-node")
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork must be true with dnsPolicy ClusterFirstWithHostNet (services reach the agent at the node's IP; cluster DNS resolves the join name)")
	}
	c := zrpcd(t, ds.Spec.Template)
	for _, p := range c.Ports {
		if p.HostPort != p.ContainerPort {
			t.Errorf("port %s: hostPort %d, want %d", p.Name, p.HostPort, p.ContainerPort)
		}
	}
	cfg := agentSettings(t, c)
	if cfg["join"] != "zrpc.zrpc.svc:8402" || cfg["bootstrap_expect"] != "" {
		t.Errorf("join %q, bootstrap_expect %q: want to join zrpc.zrpc.svc:8402 and never bootstrap", cfg["join"], cfg["bootstrap_expect"])
	}
	if cfg["non_voter"] != "true" {
		t.Errorf("non_voter %q: want true, so that a node agent, placed by neither the voters' anti-affinity nor their PDB, never takes a lost voter's place", cfg["non_voter"])
	}
	if cfg["bind"] != sampleHostIP || cfg["http_bind"] != sampleHostIP {
		t.Errorf("bind %q, http_bind %q: want the node's IP (status.hostIP)", cfg["bind"], cfg["http_bind"])
	}
	checkDataDir(t, c, cfg, "data")
	if cfg["name"] != downward["spec.nodeName"] {
		t.Errorf("name %q: want the node's name (spec.nodeName), the identity its hostPath data dir belongs to", cfg["name"])
	}
	checkProbes(t, c)
}

// TestServiceRegistersThroughItsNodesAgent: the example Deployment finds
// its agent at the node's IP, advertises its pod IP, and its config is one
// rpc accepts.
func TestServiceRegistersThroughItsNodesAgent(t *testing.T) {
	objs := decodeManifests(t)
	d := find[*appsv1.Deployment](t, objs, "user-rpc")
	c := d.Spec.Template.Spec.Containers[0]
	env := expandedEnv(t, c)
	if env["ZRPC_ADDR"] != sampleHostIP+":8400" {
		t.Errorf("ZRPC_ADDR %q: want the node's IP (status.hostIP) and the agent's gRPC port", env["ZRPC_ADDR"])
	}
	cm := find[*corev1.ConfigMap](t, objs, "user-rpc")
	checkServiceConfig(t, cm.Data["user.yaml"], d)
}

// TestClusterTokenIsAMountedFile: the cluster token, and every other
// secret (the gossip key, ACL tokens), reaches a container only as a file
// of a mounted Secret, never as an environment value, an envFrom or a
// command-line argument (which /proc, ps and pprof show).
func TestClusterTokenIsAMountedFile(t *testing.T) {
	secretEnv := map[string]bool{"ZRPC_TOKEN": true} // zrpcctl's and rpc's ACL token
	var secretFlags []string
	for _, s := range node.Settings() {
		if s.Secret {
			secretEnv[s.Env] = true
			secretFlags = append(secretFlags, "--"+s.Flag)
		}
	}
	if !secretEnv["ZRPC_CLUSTER_TOKEN"] || !secretEnv["ZRPC_ENCRYPT"] || !secretEnv["ZRPC_DNS_TOKEN"] {
		t.Fatalf("node.Settings() marks secret only %v; want the cluster token, gossip key and DNS token among them", secretEnv)
	}
	for _, w := range workloads(decodeManifests(t)) {
		for _, c := range append(slices.Clone(w.pod.Spec.InitContainers), w.pod.Spec.Containers...) {
			for _, e := range c.Env {
				if secretEnv[e.Name] || (e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil) {
					t.Errorf("%s, container %s: env %s carries a secret; mount it as a file", w, c.Name, e.Name)
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil {
					t.Errorf("%s, container %s: envFrom a Secret; mount it as a file", w, c.Name)
				}
			}
			for _, a := range append(slices.Clone(c.Command), c.Args...) {
				for _, f := range secretFlags {
					if a == f || strings.HasPrefix(a, f+"=") {
						t.Errorf("%s, container %s: secret on the command line: %s", w, c.Name, a)
					}
				}
			}
		}
		if w.pod.Labels["app.kubernetes.io/name"] != "zrpc" {
			continue
		}
		c := zrpcd(t, *w.pod)
		file := agentSettings(t, c)["cluster_token_file"]
		if file == "" {
			t.Errorf("%s: no cluster_token_file", w)
			continue
		}
		m, ok := mountOf(c, file)
		if !ok || !m.ReadOnly {
			t.Errorf("%s: cluster_token_file %s is not on a read-only mount", w, file)
			continue
		}
		v := volume(w.pod, m.Name)
		if v == nil || v.Secret == nil || v.Secret.SecretName != "zrpc-cluster-token" {
			t.Errorf("%s: %s is not mounted from the Secret zrpc-cluster-token", w, file)
		} else if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
			t.Errorf("%s: the token's file mode must give others nothing (defaultMode)", w)
		}
	}
}

// TestAgentsRequireACLTokens: every agent has ACLs on. Its HTTP endpoint
// is bound where every pod (and, on the host network, every machine that
// reaches the node) can call it, and without ACLs it serves anyone the
// registry (the web UI's data), the agent's logs and settings
// (/debug/zrpc) and CPU profiles and traces (/debug/pprof); its gRPC API
// serves every registration and deregistration to any certificate of
// the cluster's CA.
func TestAgentsRequireACLTokens(t *testing.T) {
	for _, w := range workloads(decodeManifests(t)) {
		if w.pod.Labels["app.kubernetes.io/name"] != "zrpc" {
			continue
		}
		if cfg := agentConfig(t, zrpcd(t, *w.pod)); !cfg.ACL {
			t.Errorf("%s: acl is off; set ZRPC_ACL=true (http_bind %s serves /debug/pprof, /debug/zrpc and the registry to every caller)", w, cfg.HTTPBind)
		}
	}
}

// zrpcd returns the agent's container of a pod template.
func zrpcd(t *testing.T, pod corev1.PodTemplateSpec) corev1.Container {
	t.Helper()
	for _, c := range pod.Spec.Containers {
		if c.Name == "zrpcd" {
			return c
		}
	}
	t.Fatalf("pod template %v has no container zrpcd", pod.Labels)
	return corev1.Container{}
}

func checkProbes(t *testing.T, c corev1.Container) {
	t.Helper()
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.StrVal != "http" {
		t.Errorf("readinessProbe: want GET /readyz on port http (ready: the agent knows a leader)")
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.StrVal != "http" {
		t.Errorf("livenessProbe: want GET /healthz on port http")
	}
	if _, ok := containerPort(&corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{c}}}, intstr.FromString("http"), corev1.ProtocolTCP); !ok {
		t.Errorf("no container port named http for the probes")
	}
}

// checkDataDir: the data dir is a subdirectory of the named volume's
// mount (a fresh volume's lost+found makes its root a directory zrpcd
// refuses).
func checkDataDir(t *testing.T, c corev1.Container, cfg map[string]string, volumeName string) {
	t.Helper()
	dir := cfg["data_dir"]
	m, ok := mountOf(c, dir)
	if !ok || m.Name != volumeName {
		t.Errorf("data_dir %q is not on volume %s", dir, volumeName)
		return
	}
	if filepath.Clean(dir) == filepath.Clean(m.MountPath) {
		t.Errorf("data_dir %q is the volume's mount point; use a subdirectory (lost+found)", dir)
	}
}

func mountOf(c corev1.Container, path string) (corev1.VolumeMount, bool) {
	var best corev1.VolumeMount
	for _, m := range c.VolumeMounts {
		if (path == m.MountPath || strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")) && len(m.MountPath) > len(best.MountPath) {
			best = m
		}
	}
	return best, best.Name != ""
}

func volume(pod *corev1.PodTemplateSpec, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

// Values the downward API would give, for expanding $(VAR) references.
const (
	samplePodIP  = "10.244.1.7"
	sampleHostIP = "10.0.0.5"
)

var downward = map[string]string{
	"metadata.name":      "zrpc-0",
	"metadata.namespace": "zrpc",
	"status.podIP":       samplePodIP,
	"status.hostIP":      sampleHostIP,
	"spec.nodeName":      "node-1",
}

var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandedEnv returns c's environment as Kubernetes would set it: field
// references filled from downward, $(VAR) references to earlier variables
// expanded.
func expandedEnv(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			v, ok := downward[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Errorf("container %s: env %s: no sample value for field %s", c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case e.ValueFrom != nil:
			t.Errorf("container %s: env %s: only field references are expected", c.Name, e.Name)
		default:
			env[e.Name] = expand(t, c.Name, e.Value, env)
		}
	}
	return env
}

func expand(t *testing.T, where, s string, env map[string]string) string {
	t.Helper()
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := varRef.FindStringSubmatch(ref)[1]
		v, ok := env[name]
		if !ok {
			t.Errorf("container %s: %s refers to $(%s), which is not defined before it", where, s, name)
		}
		return v
	})
}

// TestImagesArePinned: every container image names a version or a
// digest, never latest or no tag, so that a restarted pod runs what its
// neighbours run (a rolling upgrade is a change of the manifest, not of a
// registry's tag).
func TestImagesArePinned(t *testing.T) {
	for _, w := range workloads(decodeManifests(t)) {
		for _, c := range append(slices.Clone(w.pod.Spec.InitContainers), w.pod.Spec.Containers...) {
			name, digest, hasDigest := strings.Cut(c.Image, "@")
			if hasDigest {
				if !strings.HasPrefix(digest, "sha256:") || len(digest) != len("sha256:")+64 {
					t.Errorf("%s, container %s: image %s: a digest is sha256: and 64 hex digits", w, c.Name, c.Image)
				}
				continue
			}
			tag := ""
			if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
				tag = name[i+1:]
			}
			if tag == "" || tag == "latest" {
				t.Errorf("%s, container %s: image %q: pin a version tag or a digest", w, c.Name, c.Image)
			}
		}
	}
}
