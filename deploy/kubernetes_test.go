package deploy_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/scattergather/scattergather/internal/cli"
	"github.com/scattergather/scattergather/internal/metrics"
	"github.com/scattergather/scattergather/internal/routes"
)

const kubeDir = "kubernetes"

// kustomization is the part of a kustomize Kustomization the base uses;
// decoded strictly, so a field the base adds must be added here (and
// checked).
type kustomization struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors"`
	} `json:"labels"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
	Resources []string `json:"resources"`
}

// manifests is the decoded base.
type manifests struct {
	kust         kustomization
	configMaps   map[string]*corev1.ConfigMap
	services     []*corev1.Service
	statefulSets []*appsv1.StatefulSet
	deployments  []*appsv1.Deployment
	jobs         []*batchv1.Job
	pdbs         []*policyv1.PodDisruptionBudget
}

// workload is a pod template with the name and kind of its owner.
type workload struct {
	kind, name string
	replicas   int32
	selector   *metav1.LabelSelector
	pod        *corev1.PodTemplateSpec
}

func (m *manifests) workloads() []workload {
	var out []workload
	for _, s := range m.statefulSets {
		out = append(out, workload{"StatefulSet", s.Name, replicas(s.Spec.Replicas), s.Spec.Selector, &s.Spec.Template})
	}
	for _, d := range m.deployments {
		out = append(out, workload{"Deployment", d.Name, replicas(d.Spec.Replicas), d.Spec.Selector, &d.Spec.Template})
	}
	for _, j := range m.jobs {
		out = append(out, workload{"Job", j.Name, 1, j.Spec.Selector, &j.Spec.Template})
	}
	return out
}

// replicas is a workload's replica count; unset is 1.
func replicas(n *int32) int32 {
	if n == nil {
		return 1
	}
	return *n
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// strict decodes one YAML document into v, failing on unknown and
// duplicate fields as `kubectl apply --validate=strict` does.
func strict(doc []byte, v any) error {
	return yaml.UnmarshalStrict(doc, v)
}

// loadKube decodes kustomization.yaml and every resource it lists with the
// Kubernetes API types.
func loadKube(t *testing.T) *manifests {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(kubeDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := &manifests{configMaps: map[string]*corev1.ConfigMap{}}
	if err := strict(raw, &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if m.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || m.kust.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", m.kust.APIVersion, m.kust.Kind)
	}
	for _, res := range m.kust.Resources {
		raw, err := os.ReadFile(filepath.Join(kubeDir, res))
		if err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", res, err)
			continue
		}
		for i, doc := range docSeparator.Split(string(raw), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			if err := m.add([]byte(doc)); err != nil {
				t.Errorf("%s, document %d: %v", res, i+1, err)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// add decodes doc by its apiVersion and kind; another kind is an error, so
// a new kind in the base needs its checks here.
func (m *manifests) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj metav1.Object
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "apps/v1 StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "batch/v1 Job":
		obj = &batchv1.Job{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	default:
		return fmt.Errorf("kind %q of %q: not one the test knows how to check", tm.Kind, tm.APIVersion)
	}
	if err := strict(doc, obj); err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if obj.GetName() == "" {
		return fmt.Errorf("%s without a name", tm.Kind)
	}
	switch o := obj.(type) {
	case *corev1.ConfigMap:
		m.configMaps[o.Name] = o
	case *corev1.Service:
		m.services = append(m.services, o)
	case *appsv1.StatefulSet:
		m.statefulSets = append(m.statefulSets, o)
	case *appsv1.Deployment:
		m.deployments = append(m.deployments, o)
	case *batchv1.Job:
		m.jobs = append(m.jobs, o)
	case *policyv1.PodDisruptionBudget:
		m.pdbs = append(m.pdbs, o)
	}
	return nil
}

// TestKustomizationListsEveryFile: every YAML file of deploy/kubernetes is
// in kustomization.yaml's resources, and every listed one exists (loadKube).
func TestKustomizationListsEveryFile(t *testing.T) {
	m := loadKube(t)
	files, err := filepath.Glob(filepath.Join(kubeDir, "*.y*ml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		if name != "kustomization.yaml" && !slices.Contains(m.kust.Resources, name) {
			t.Errorf("%s is not in kustomization.yaml's resources: kubectl apply -k would leave it out", name)
		}
	}
	if d := duplicates(m.kust.Resources); len(d) > 0 {
		t.Errorf("kustomization.yaml lists %v twice", d)
	}
	var names []string
	for _, w := range m.workloads() {
		names = append(names, w.kind+"/"+w.name)
	}
	for _, s := range m.services {
		names = append(names, "Service/"+s.Name)
	}
	for _, p := range m.pdbs {
		names = append(names, "PodDisruptionBudget/"+p.Name)
	}
	if d := duplicates(names); len(d) > 0 {
		t.Errorf("resources defined twice: %v", d)
	}
}

func duplicates(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if seen[x] {
			out = append(out, x)
		}
		seen[x] = true
	}
	return out
}

// dockerfileEnv returns the SG_ variables the image sets (ENV), which a
// container has unless its manifest overrides them.
func dockerfileEnv(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	joined := strings.ReplaceAll(string(raw), "\\\n", " ")
	for _, line := range strings.Split(joined, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.EqualFold(f[0], "ENV") {
			continue
		}
		for _, kv := range f[1:] {
			if k, v, ok := strings.Cut(kv, "="); ok {
				env[k] = strings.Trim(v, `"`)
			}
		}
	}
	if len(env) == 0 {
		t.Fatal("the Dockerfile sets no ENV")
	}
	return env
}

// containerEnv is what the container's process sees: the image's ENV, then
// its envFrom ConfigMaps, then its env, with a value from the downward API
// resolved for the pod podName. It fails on a reference it cannot resolve.
// own lists the SG_ variables the manifest sets (not the image), each of
// which must name a flag of the command.
func containerEnv(m *manifests, image map[string]string, c corev1.Container, podName string) (env map[string]string, own []string, err error) {
	env = map[string]string{}
	for k, v := range image {
		env[k] = v
	}
	var errs []error
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			errs = append(errs, errors.New("envFrom other than a ConfigMap"))
			continue
		}
		cm, ok := m.configMaps[from.ConfigMapRef.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("envFrom: no ConfigMap %s in the base", from.ConfigMapRef.Name))
			continue
		}
		for k, v := range cm.Data {
			env[from.Prefix+k] = v
			own = append(own, from.Prefix+k)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = podName
		default:
			errs = append(errs, fmt.Errorf("env %s: a valueFrom the test does not resolve: %+v", e.Name, e.ValueFrom))
		}
		own = append(own, e.Name)
	}
	return env, own, errors.Join(errs...)
}

// podName is the name of a workload's first pod as the test imagines it.
func podName(w workload) string {
	if w.kind == "StatefulSet" {
		return w.name + "-0" // what the downward API gives the first pod
	}
	return w.name + "-5d8f7b9c4-x2x7q"
}

// parsed is a container's command line as the CLI parses it.
type parsed struct {
	cmd *cli.Command
	fs  *flag.FlagSet
	env map[string]string
}

func parseContainer(t *testing.T, m *manifests, w workload, c corev1.Container) *parsed {
	t.Helper()
	if len(c.Command) > 0 {
		t.Errorf("container %s sets command %q: the image's entrypoint is the binary, give the subcommand in args", c.Name, c.Command)
	}
	env, own, err := containerEnv(m, dockerfileEnv(t), c, podName(w))
	if err != nil {
		t.Fatal(err)
	}
	cmd, fs, err := cli.ParseOnly(c.Args, env)
	if err != nil {
		t.Fatalf("args %q with the env of the manifest and the image: the CLI refuses them: %v", c.Args, err)
	}
	for _, k := range own {
		name, ok := strings.CutPrefix(k, "SG_")
		if !ok {
			// The Go runtime's, and OpenTelemetry's, which the role
			// commands' SDK reads (README: Observability).
			if !slices.Contains([]string{"GOMEMLIMIT", "GOMAXPROCS", "GODEBUG"}, k) && !strings.HasPrefix(k, "OTEL_") {
				t.Errorf("env %s: neither an SG_ flag nor a Go runtime or OTEL_ variable", k)
			}
			continue
		}
		flagName := strings.ReplaceAll(strings.ToLower(name), "_", "-")
		if fs.Lookup(flagName) == nil || cli.EnvName(flagName) != k {
			t.Errorf("env %s: %s has no flag --%s, so it is ignored", k, cmd.Name, flagName)
		}
	}
	return &parsed{cmd: cmd, fs: fs, env: env}
}

func flagValue(fs *flag.FlagSet, name string) string {
	if f := fs.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// port returns the port of host:port.
func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

// resolvePort returns the container port a probe or Service names.
func resolvePort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	if p.Type == intstr.Int {
		return p.IntVal, true
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func namedPort(c corev1.Container, name string) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if cp.Name == name {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// probeStatus is what the role's metrics server (metrics.NewServer, the
// server every role runs on --metrics-addr) answers on path while its
// readiness check passes (ready) or fails.
func probeStatus(t *testing.T, path string, ready bool) int {
	t.Helper()
	check := func() error {
		if ready {
			return nil
		}
		return errors.New("not in its group yet")
	}
	srv, err := metrics.NewServer(metrics.ServerConfig{Addr: "127.0.0.1:0", Gatherer: prometheus.NewRegistry(),
		Checks: []metrics.Check{{Name: "role", Ready: check}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	res, err := http.Get("http://" + srv.Addr() + path)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// longRunning are the commands that serve /metrics, /healthz and /readyz.
var longRunning = []string{"scatterer", "processor", "aggregator", "gateway"}

// TestKubernetesWorkloads: every container runs a command line our CLI
// parses with the env the pod gives it (image ENV, ConfigMaps, env, the
// downward API), every SG_ variable it sets names a flag of its command,
// the roles that take --instance-id run as StatefulSets with the pod's
// name as their instance id, ports and probes are the ones the role
// serves, and every container has resources and runs as non-root.
func TestKubernetesWorkloads(t *testing.T) {
	m := loadKube(t)
	images := map[string]bool{}
	for _, im := range m.kust.Images {
		images[im.Name] = true
	}
	seen := map[string]bool{}
	for _, w := range m.workloads() {
		t.Run(w.kind+"/"+w.name, func(t *testing.T) {
			sel, err := metav1.LabelSelectorAsSelector(w.selector)
			switch {
			case w.kind == "Job" && w.selector == nil: // the Job controller sets it
			case err != nil || sel.Empty():
				t.Errorf("selector %v: %v", w.selector, err)
			case !sel.Matches(labels.Set(w.pod.Labels)):
				t.Errorf("selector %v does not match the pod labels %v", w.selector, w.pod.Labels)
			}
			spec := w.pod.Spec
			if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
				t.Error("pod securityContext: want runAsNonRoot: true")
			}
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Error("the roles never talk to the Kubernetes API: want automountServiceAccountToken: false")
			}
			if len(spec.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(spec.Containers))
			}
			c := spec.Containers[0]
			if !images[c.Image] {
				t.Errorf("image %q is not in kustomization.yaml's images, so `kustomize edit set image` would not reach it", c.Image)
			}
			checkResources(t, c)
			if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("container securityContext: want readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
			}
			p := parseContainer(t, m, w, c)
			seen[p.cmd.Name] = true
			checkRoute(t, p)
			checkInstanceID(t, w, c, p)
			if slices.Contains(longRunning, p.cmd.Name) {
				checkPortsAndProbes(t, w, c, p)
			} else if w.kind != "Job" {
				t.Errorf("%s is no long-running command: run it as a Job", p.cmd.Name)
			}
		})
	}
	for _, want := range append([]string{"topics"}, longRunning...) {
		if !seen[want] {
			t.Errorf("no workload runs %s", want)
		}
	}
}

func checkResources(t *testing.T, c corev1.Container) {
	t.Helper()
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() {
		t.Errorf("resources: want cpu and memory requests, have %v", req)
	}
	if lim.Memory().IsZero() {
		t.Errorf("resources: want a memory limit, have %v", lim)
		return
	}
	if lim.Memory().Cmp(*req.Memory()) < 0 {
		t.Errorf("memory limit %s below the request %s", lim.Memory(), req.Memory())
	}
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		q, err := resource.ParseQuantity(strings.TrimSuffix(e.Value, "B"))
		if err != nil {
			t.Errorf("GOMEMLIMIT %q: %v", e.Value, err)
		} else if q.Cmp(*lim.Memory()) >= 0 {
			t.Errorf("GOMEMLIMIT %s is not below the memory limit %s: the kernel kills the process before the Go GC tries", e.Value, lim.Memory())
		}
	}
}

// checkRoute: a processor's --route is in the route table it serves and its
// --recipient one of the route's, as the processor checks at start.
func checkRoute(t *testing.T, p *parsed) {
	t.Helper()
	if p.cmd.Name != "processor" {
		return
	}
	if flagValue(p.fs, "routes-file") != "" {
		t.Logf("--routes-file %s: the route is checked at start only", flagValue(p.fs, "routes-file"))
		return
	}
	route := flagValue(p.fs, "route")
	r, ok := routes.Demo().Find(route)
	if !ok {
		t.Errorf("--route %q is not a route of the demo table (%v): the processor would refuse to start", route, routes.Demo().Names())
		return
	}
	if err := r.CheckRecipient(flagValue(p.fs, "recipient")); err != nil {
		t.Errorf("--recipient: %v", err)
	}
}

// checkInstanceID: a command with --instance-id (a consumer group member
// with a transactional id) runs in a StatefulSet and takes the pod's name
// from the downward API, so that a restarted pod keeps its static group
// membership and fences its predecessor.
func checkInstanceID(t *testing.T, w workload, c corev1.Container, p *parsed) {
	t.Helper()
	takes := p.fs.Lookup("instance-id") != nil
	if !takes || w.kind == "Job" {
		if w.kind == "StatefulSet" {
			t.Errorf("%s takes no --instance-id: it needs no StatefulSet", p.cmd.Name)
		}
		return
	}
	if w.kind != "StatefulSet" {
		t.Fatalf("%s takes --instance-id (static membership, transactional id): run it as a StatefulSet, not a %s, so its pods keep their names", p.cmd.Name, w.kind)
	}
	var fromPod bool
	for _, e := range c.Env {
		if e.Name == cli.EnvName("instance-id") && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
			fromPod = true
		}
	}
	if !fromPod {
		t.Errorf("want env %s from the downward API (fieldRef metadata.name): the pod's name, stable across restarts", cli.EnvName("instance-id"))
	} else if got, want := flagValue(p.fs, "instance-id"), podName(w); got != want {
		t.Errorf("--instance-id is %q for pod %s: an argument overrides the pod's name", got, want)
	}
}

func checkPortsAndProbes(t *testing.T, w workload, c corev1.Container, p *parsed) {
	t.Helper()
	addrFlag := "metrics-addr"
	if p.fs.Lookup("admin-addr") != nil {
		addrFlag = "admin-addr"
	}
	addr := flagValue(p.fs, addrFlag)
	if host, _, err := net.SplitHostPort(addr); err != nil || (host != "0.0.0.0" && host != "") {
		t.Fatalf("--%s %q: want 0.0.0.0:PORT, reachable by the kubelet and Prometheus", addrFlag, addr)
	}
	metricsPort := port(t, addr)
	if cp, ok := namedPort(c, "metrics"); !ok || cp.ContainerPort != metricsPort {
		t.Errorf("want a container port named metrics, %d (--%s %s), have %+v", metricsPort, addrFlag, addr, c.Ports)
	}
	if a := w.pod.Annotations; a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(metricsPort)) || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations %v: want prometheus.io/scrape true, port %d, path /metrics", a, metricsPort)
	}
	if p.cmd.Name == "gateway" {
		api := port(t, flagValue(p.fs, "addr"))
		if cp, ok := namedPort(c, "http"); !ok || cp.ContainerPort != api {
			t.Errorf("want a container port named http, %d (--addr %s), have %+v", api, flagValue(p.fs, "addr"), c.Ports)
		}
	}
	for _, pr := range []struct {
		kind  string
		probe *corev1.Probe
		// answers: the status the probe must see while the role is ready
		// and while it is not.
		ready, notReady int
	}{
		{"readiness", c.ReadinessProbe, http.StatusOK, http.StatusServiceUnavailable},
		// A liveness probe that followed readiness would restart every
		// pod while Kafka is away.
		{"liveness", c.LivenessProbe, http.StatusOK, http.StatusOK},
		{"startup", c.StartupProbe, http.StatusOK, http.StatusOK},
	} {
		if pr.probe == nil {
			if pr.kind != "startup" {
				t.Errorf("no %s probe", pr.kind)
			}
			continue
		}
		g := pr.probe.HTTPGet
		if g == nil {
			t.Errorf("%s probe: want an httpGet on the role's server", pr.kind)
			continue
		}
		if n, ok := resolvePort(c, g.Port); !ok || n != metricsPort {
			t.Errorf("%s probe on port %s: the role serves its probes on %d (--%s)", pr.kind, g.Port.String(), metricsPort, addrFlag)
		}
		if got := probeStatus(t, g.Path, true); got != pr.ready {
			t.Errorf("%s probe %s: the role's server answers %d while ready, want %d", pr.kind, g.Path, got, pr.ready)
		}
		if got := probeStatus(t, g.Path, false); got != pr.notReady {
			t.Errorf("%s probe %s: the role's server answers %d while not ready, want %d", pr.kind, g.Path, got, pr.notReady)
		}
	}
}

// podsOf returns the workloads whose pods sel matches.
func podsOf(m *manifests, sel *metav1.LabelSelector) ([]workload, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, err
	}
	if s.Empty() {
		return nil, errors.New("empty selector: it matches every pod of the namespace")
	}
	var out []workload
	for _, w := range m.workloads() {
		if s.Matches(labels.Set(w.pod.Labels)) {
			out = append(out, w)
		}
	}
	return out, nil
}

// TestKubernetesDisruptionBudgets: every StatefulSet and Deployment has one
// PodDisruptionBudget, whose selector matches its pods and no other's.
func TestKubernetesDisruptionBudgets(t *testing.T) {
	m := loadKube(t)
	covered := map[string]int{}
	for _, p := range m.pdbs {
		ws, err := podsOf(m, p.Spec.Selector)
		if err != nil {
			t.Errorf("PodDisruptionBudget %s: %v", p.Name, err)
			continue
		}
		if len(ws) != 1 || ws[0].kind == "Job" {
			t.Errorf("PodDisruptionBudget %s matches the pods of %d workloads, want those of one StatefulSet or Deployment", p.Name, len(ws))
			continue
		}
		covered[ws[0].kind+"/"+ws[0].name]++
		// A budget that allows no eviction blocks every node drain.
		replicas := ws[0].replicas
		switch min, max := p.Spec.MinAvailable, p.Spec.MaxUnavailable; {
		case min == nil && max == nil:
			t.Errorf("PodDisruptionBudget %s sets neither minAvailable nor maxUnavailable", p.Name)
		case min != nil && min.Type == intstr.Int && min.IntVal >= replicas:
			t.Errorf("PodDisruptionBudget %s: minAvailable %d of %d replicas allows no eviction: a node drain would hang", p.Name, min.IntVal, replicas)
		case max != nil && max.Type == intstr.Int && max.IntVal < 1:
			t.Errorf("PodDisruptionBudget %s: maxUnavailable %d allows no eviction: a node drain would hang", p.Name, max.IntVal)
		}
	}
	for _, w := range m.workloads() {
		if w.kind == "Job" {
			continue
		}
		if n := covered[w.kind+"/"+w.name]; n != 1 {
			t.Errorf("%s/%s has %d PodDisruptionBudgets, want 1", w.kind, w.name, n)
		}
	}
}

// TestKubernetesServices: every Service selects the pods of one workload and
// targets ports its container has; each StatefulSet's serviceName is a
// headless Service of its own pods; the gateway's API is a Service port.
func TestKubernetesServices(t *testing.T) {
	m := loadKube(t)
	byName := map[string]*corev1.Service{}
	var gatewayAPI bool
	for _, s := range m.services {
		byName[s.Name] = s
		ws, err := podsOf(m, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		if err != nil || len(ws) != 1 {
			t.Errorf("Service %s selects the pods of %d workloads (%v), want 1", s.Name, len(ws), err)
			continue
		}
		c := ws[0].pod.Spec.Containers[0]
		for _, sp := range s.Spec.Ports {
			target := sp.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(sp.Port)
			}
			if _, ok := resolvePort(c, target); !ok {
				t.Errorf("Service %s port %s targets %s, which container %s does not have", s.Name, sp.Name, target.String(), c.Name)
			}
			if sp.Name == "http" && slices.Contains(c.Args, "gateway") {
				gatewayAPI = true
			}
		}
	}
	if !gatewayAPI {
		t.Error("no Service exposes the gateway's API (a port named http)")
	}
	for _, s := range m.statefulSets {
		svc, ok := byName[s.Spec.ServiceName]
		if !ok {
			t.Errorf("StatefulSet %s: serviceName %q is no Service of the base", s.Name, s.Spec.ServiceName)
			continue
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("StatefulSet %s: its Service %s is not headless (clusterIP: None)", s.Name, svc.Name)
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(s.Spec.Template.Labels)) {
			t.Errorf("StatefulSet %s: its Service %s does not select its pods", s.Name, svc.Name)
		}
	}
}
