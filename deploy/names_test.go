package deploy

import (
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// TestManifestNamesAreValid: what the API server checks of names and
// references, which a strict decode does not: object, container, port,
// volume and environment variable names, labels, and every volume mount
// naming a volume of its pod.
func TestManifestNamesAreValid(t *testing.T) {
	check := func(where, what string, errs []string) {
		for _, e := range errs {
			t.Errorf("%s: %s: %s", where, what, e)
		}
	}
	labels := func(where string, m map[string]string) {
		for k, v := range m {
			check(where, "label key "+k, validation.IsQualifiedName(k))
			check(where, "label value "+v, validation.IsValidLabelValue(v))
		}
	}
	for _, o := range decodeManifests(t) {
		meta := o.obj.(metav1.Object)
		if _, ok := o.obj.(*corev1.Service); ok {
			check(o.String(), "name", validation.IsDNS1035Label(o.name))
		} else {
			check(o.String(), "name", validation.IsDNS1123Subdomain(o.name))
		}
		labels(o.String(), meta.GetLabels())
		if svc, ok := o.obj.(*corev1.Service); ok {
			for _, p := range svc.Spec.Ports {
				check(o.String(), "port name", validation.IsValidPortName(p.Name))
				check(o.String(), "port", validation.IsValidPortNum(int(p.Port)))
			}
		}
	}
	for _, w := range workloads(decodeManifests(t)) {
		labels(w.String(), w.pod.Labels)
		volumes := map[string]bool{}
		for _, v := range w.pod.Spec.Volumes {
			check(w.String(), "volume name", validation.IsDNS1123Label(v.Name))
			volumes[v.Name] = true
		}
		if sts, ok := w.obj.(*appsv1.StatefulSet); ok {
			for _, c := range sts.Spec.VolumeClaimTemplates {
				volumes[c.Name] = true
			}
		}
		for _, c := range append(append([]corev1.Container{}, w.pod.Spec.InitContainers...), w.pod.Spec.Containers...) {
			where := fmt.Sprintf("%s, container %s", w, c.Name)
			check(where, "name", validation.IsDNS1123Label(c.Name))
			for _, p := range c.Ports {
				check(where, "port name", validation.IsValidPortName(p.Name))
				check(where, "port", validation.IsValidPortNum(int(p.ContainerPort)))
			}
			for _, e := range c.Env {
				check(where, "env name", validation.IsEnvVarName(e.Name))
			}
			for _, m := range c.VolumeMounts {
				if !volumes[m.Name] {
					t.Errorf("%s: mounts volume %s, which the pod does not have", where, m.Name)
				}
			}
		}
	}
}
