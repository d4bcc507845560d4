package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/retrainhq/orchestrator/jobs"
	"github.com/retrainhq/orchestrator/orchestrator"
)

// Names the manifests give their objects.
const (
	namespaceName = "orchestrator"
	secretName    = "orchestrator"
	configMapName = "orchestrator-config"
	serviceName   = "orchestrator"
	webName       = "orchestrator-web"
	workerName    = "orchestrator-worker"
	gpuWorkerName = "orchestrator-worker-gpu"
)

// shutdownMargin is what a stopping process needs besides the kill grace: the HTTP server's and the pool's
// shutdown. A worker pod's terminationGracePeriodSeconds must cover both.
const shutdownMargin = 30 * time.Second

// manifest is one YAML document of deploy/kubernetes, as a generic map and as the node it was decoded from.
type manifest struct {
	file string
	doc  map[string]any
	node *yaml.Node
}

func (m manifest) kind() string { return str(m.doc["kind"]) }

func (m manifest) name() string {
	meta, _ := m.doc["metadata"].(map[string]any)
	return str(meta["name"])
}

func (m manifest) namespace() string {
	meta, _ := m.doc["metadata"].(map[string]any)
	return str(meta["namespace"])
}

func (m manifest) String() string { return m.file + ": " + m.kind() + "/" + m.name() }

// str is v when it is a string, else "".
func str(v any) string {
	s, _ := v.(string)
	return s
}

// loadManifests decodes every document of every kubernetes/*.yaml file, skipping empty ones.
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var out []manifest
	for _, file := range files {
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var node yaml.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, file)
			var doc map[string]any
			require.NoError(t, node.Decode(&doc), file)
			if doc == nil {
				continue
			}
			out = append(out, manifest{file: filepath.ToSlash(file), doc: doc, node: &node})
		}
	}
	return out
}

// find returns the one object of that kind and name.
func find(t *testing.T, ms []manifest, kind, name string) manifest {
	t.Helper()
	for _, m := range ms {
		if m.kind() == kind && m.name() == name {
			return m
		}
	}
	require.FailNow(t, "missing object", "%s/%s", kind, name)
	return manifest{}
}

// decodeAs decodes a manifest into a typed view of the fields the tests read.
func decodeAs[T any](t *testing.T, m manifest) T {
	t.Helper()
	var v T
	require.NoError(t, m.node.Decode(&v), m.String())
	return v
}

type deployment struct {
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds *int64            `yaml:"terminationGracePeriodSeconds"`
	NodeSelector                  map[string]string `yaml:"nodeSelector"`
	SecurityContext               struct {
		RunAsNonRoot *bool  `yaml:"runAsNonRoot"`
		RunAsUser    *int64 `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Env     []envVar `yaml:"env"`
	EnvFrom []struct {
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]any `yaml:"requests"`
		Limits   map[string]any `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
		ConfigMapKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"configMapKeyRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

// env returns the literal value of an environment variable and whether the container sets it.
func (c container) env(name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// hasPort reports whether port, a number or a name as in a probe or a Service's targetPort, is one of the
// container's ports, and returns its number.
func (c container) hasPort(port any) (int, bool) {
	for _, p := range c.Ports {
		switch v := port.(type) {
		case int:
			if v == p.ContainerPort {
				return p.ContainerPort, true
			}
		case string:
			if v == p.Name || v == strconv.Itoa(p.ContainerPort) {
				return p.ContainerPort, true
			}
		}
	}
	return 0, false
}

// listenPort is the port the orchestrator listens on: ORCHESTRATOR_ADDR's, or the default :8080.
func (c container) listenPort(t *testing.T) int {
	t.Helper()
	addr, ok := c.env("ORCHESTRATOR_ADDR")
	if !ok {
		addr = ":8080"
	}
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(port)
	require.NoError(t, err)
	return n
}

// deployments returns every Deployment by name.
func deployments(t *testing.T, ms []manifest) map[string]deployment {
	t.Helper()
	out := map[string]deployment{}
	for _, m := range ms {
		if m.kind() == "Deployment" {
			out[m.name()] = decodeAs[deployment](t, m)
		}
	}
	return out
}

// orchestratorContainer is the Deployment's one container.
func orchestratorContainer(t *testing.T, d deployment) container {
	t.Helper()
	require.Len(t, d.Spec.Template.Spec.Containers, 1)
	return d.Spec.Template.Spec.Containers[0]
}

// subset reports whether every label of sel is in labels with the same value.
func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func TestManifestsWellFormed(t *testing.T) {
	t.Parallel()
	ms := loadManifests(t)
	seen := map[string]string{}
	for _, m := range ms {
		t.Run(m.String(), func(t *testing.T) {
			require.NotEmpty(t, str(m.doc["apiVersion"]), "apiVersion")
			require.NotEmpty(t, m.kind(), "kind")
			require.NotEmpty(t, m.name(), "metadata.name")
			if m.kind() != "Namespace" {
				require.Equal(t, namespaceName, m.namespace(), "metadata.namespace")
			}
		})
		id := m.kind() + "/" + m.name()
		require.NotContains(t, seen, id, "%s is declared twice", id)
		seen[id] = m.file
	}
}

func TestManifestKinds(t *testing.T) {
	t.Parallel()
	ms := loadManifests(t)
	var kinds, objects []string
	for _, m := range ms {
		if !slices.Contains(kinds, m.kind()) {
			kinds = append(kinds, m.kind())
		}
		objects = append(objects, m.kind()+"/"+m.name())
	}
	require.ElementsMatch(t, []string{"Namespace", "Secret", "ConfigMap", "Deployment", "Service"}, kinds)
	require.ElementsMatch(t, []string{
		"Namespace/" + namespaceName,
		"Secret/" + secretName,
		"ConfigMap/" + configMapName,
		"Deployment/" + webName,
		"Deployment/" + workerName,
		"Deployment/" + gpuWorkerName,
		"Service/" + serviceName,
	}, objects)
}

func TestDeploymentSelectors(t *testing.T) {
	t.Parallel()
	deps := deployments(t, loadManifests(t))
	for name, d := range deps {
		t.Run(name, func(t *testing.T) {
			sel := d.Spec.Selector.MatchLabels
			require.NotEmpty(t, sel)
			require.True(t, subset(sel, d.Spec.Template.Metadata.Labels), "selector %v, pod labels %v", sel, d.Spec.Template.Metadata.Labels)
			// Deployments whose selectors overlap fight over each other's pods.
			for other, o := range deps {
				if other != name {
					require.False(t, subset(sel, o.Spec.Template.Metadata.Labels), "the selector of %s matches the pods of %s", name, other)
				}
			}
		})
	}
}

func TestServiceSelectsWebPods(t *testing.T) {
	t.Parallel()
	ms := loadManifests(t)
	deps := deployments(t, ms)
	svc := decodeAs[struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Port       int `yaml:"port"`
				TargetPort any `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}](t, find(t, ms, "Service", serviceName))
	require.NotEmpty(t, svc.Spec.Selector)

	tests := []struct {
		deployment string
		selected   bool
	}{
		{webName, true},
		{workerName, false},
		{gpuWorkerName, false},
	}
	for _, tt := range tests {
		t.Run(tt.deployment, func(t *testing.T) {
			d, ok := deps[tt.deployment]
			require.True(t, ok)
			require.Equal(t, tt.selected, subset(svc.Spec.Selector, d.Spec.Template.Metadata.Labels))
		})
	}

	// Port 80 reaches the web container's listening port.
	web := orchestratorContainer(t, deps[webName])
	require.Len(t, svc.Spec.Ports, 1)
	require.Equal(t, 80, svc.Spec.Ports[0].Port)
	port, ok := web.hasPort(svc.Spec.Ports[0].TargetPort)
	require.True(t, ok, "targetPort %v is not a port of the web container", svc.Spec.Ports[0].TargetPort)
	require.Equal(t, web.listenPort(t), port)
}

func TestSecret(t *testing.T) {
	t.Parallel()
	ms := loadManifests(t)
	secret := decodeAs[struct {
		StringData map[string]string `yaml:"stringData"`
		Data       map[string]string `yaml:"data"`
	}](t, find(t, ms, "Secret", secretName))

	// Placeholders in stringData, each marked to be changed.
	require.Empty(t, secret.Data)
	require.ElementsMatch(t, []string{"database-url", "webhook-secret", "admin-token"}, slices.Collect(maps.Keys(secret.StringData)))
	for key, value := range secret.StringData {
		require.Contains(t, value, "CHANGE-ME", key)
	}

	// Every reference names the Secret and one of its keys, and every key is used.
	used := map[string]bool{}
	for name, d := range deployments(t, ms) {
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.SecretKeyRef
				require.Equal(t, secretName, ref.Name, "%s: %s", name, e.Name)
				require.Contains(t, secret.StringData, ref.Key, "%s: %s", name, e.Name)
				used[ref.Key] = true
			}
			for _, from := range c.EnvFrom {
				if from.SecretRef != nil {
					require.Equal(t, secretName, from.SecretRef.Name, name)
				}
			}
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				require.Equal(t, secretName, v.Secret.SecretName, name)
			}
		}
	}
	for key := range secret.StringData {
		require.True(t, used[key], "no Deployment uses the key %s", key)
	}
}

func TestConfigMapMounts(t *testing.T) {
	t.Parallel()
	ms := loadManifests(t)
	cm := decodeAs[struct {
		Data map[string]string `yaml:"data"`
	}](t, find(t, ms, "ConfigMap", configMapName))
	configPaths := map[string]bool{}
	for name, d := range deployments(t, ms) {
		t.Run(name, func(t *testing.T) {
			pod := d.Spec.Template.Spec
			var configVolumes []string
			for _, v := range pod.Volumes {
				if v.ConfigMap != nil {
					require.Equal(t, configMapName, v.ConfigMap.Name, v.Name)
					configVolumes = append(configVolumes, v.Name)
				}
			}
			require.Len(t, configVolumes, 1)
			c := orchestratorContainer(t, d)
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
					require.Equal(t, configMapName, e.ValueFrom.ConfigMapKeyRef.Name, e.Name)
					require.Contains(t, cm.Data, e.ValueFrom.ConfigMapKeyRef.Key, e.Name)
				}
			}

			// ORCHESTRATOR_CONFIG is a key of the ConfigMap where its volume is mounted.
			configPath, ok := c.env("ORCHESTRATOR_CONFIG")
			require.True(t, ok, "ORCHESTRATOR_CONFIG")
			var mountPath string
			for _, vm := range c.VolumeMounts {
				if vm.Name == configVolumes[0] {
					mountPath = vm.MountPath
				}
			}
			require.NotEmpty(t, mountPath, "the ConfigMap volume is not mounted")
			require.Equal(t, mountPath, path.Dir(configPath))
			require.Contains(t, cm.Data, path.Base(configPath))
			configPaths[configPath] = true
		})
	}
	// Every process syncs the file at start and disables the mappings missing from it: all read the same one.
	require.Len(t, configPaths, 1)
}

func TestRoles(t *testing.T) {
	t.Parallel()
	deps := deployments(t, loadManifests(t))
	tests := []struct {
		deployment string
		role       string
		queues     string // "" when unset
	}{
		{webName, "web", ""},
		{workerName, "worker", "runs"},
		{gpuWorkerName, "worker", "gpu-a100"},
	}
	for _, tt := range tests {
		t.Run(tt.deployment, func(t *testing.T) {
			d, ok := deps[tt.deployment]
			require.True(t, ok)
			c := orchestratorContainer(t, d)
			role, _ := c.env("ORCHESTRATOR_ROLE")
			require.Equal(t, tt.role, role)
			queues, _ := c.env("ORCHESTRATOR_QUEUES")
			require.Equal(t, tt.queues, queues)

			// serve needs the database and the webhook secret in every role.
			names := map[string]bool{}
			for _, e := range c.Env {
				names[e.Name] = true
			}
			require.True(t, names["DATABASE_URL"], "DATABASE_URL")
			require.True(t, names["HUGGINGFACE_WEBHOOK_SECRET"], "HUGGINGFACE_WEBHOOK_SECRET")
		})
	}
}

func TestConfigMapMappings(t *testing.T) {
	t.Parallel()
	ms := loadManifests(t)
	cm := decodeAs[struct {
		Data map[string]string `yaml:"data"`
	}](t, find(t, ms, "ConfigMap", configMapName))
	served := map[string]bool{}
	for _, d := range deployments(t, ms) {
		c := orchestratorContainer(t, d)
		if role, _ := c.env("ORCHESTRATOR_ROLE"); role == "web" {
			continue
		}
		queues, ok := c.env("ORCHESTRATOR_QUEUES")
		if !ok {
			queues = orchestrator.QueueDefault
		}
		for _, q := range strings.Split(queues, ",") {
			served[strings.TrimSpace(q)] = true
		}
	}

	require.NotEmpty(t, cm.Data)
	for key, content := range cm.Data {
		t.Run(key, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, key)
			require.NoError(t, os.WriteFile(file, []byte(content), 0o600))
			mappings, err := orchestrator.LoadConfig(file)
			require.NoError(t, err)
			require.NotEmpty(t, mappings)
			for _, m := range mappings {
				// A queue no worker serves would keep its runs queued forever.
				require.True(t, served[m.Queue], "mapping %s: no worker serves queue %s", m.Name, m.Queue)
				// A relative workdir would resolve against the ConfigMap's mount, not the worker image.
				if m.Workdir != "" {
					require.False(t, strings.HasPrefix(m.Workdir, dir), "mapping %s: workdir must be absolute", m.Name)
				}
			}
		})
	}
}

func TestEnvDocumented(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	for name, d := range deployments(t, loadManifests(t)) {
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, e := range c.Env {
				require.True(t, strings.Contains(string(readme), "`"+e.Name+"`"), "%s: %s is not documented in README.md", name, e.Name)
			}
		}
	}
}

func TestProbes(t *testing.T) {
	t.Parallel()
	deps := deployments(t, loadManifests(t))
	for name, d := range deps {
		c := orchestratorContainer(t, d)
		listen := c.listenPort(t)
		tests := []struct {
			probe string
			p     *probe
			path  string
		}{
			{"readinessProbe", c.ReadinessProbe, "/readyz"},
			{"livenessProbe", c.LivenessProbe, "/healthz"},
		}
		for _, tt := range tests {
			t.Run(name+"/"+tt.probe, func(t *testing.T) {
				require.NotNil(t, tt.p)
				require.NotNil(t, tt.p.HTTPGet)
				require.Equal(t, tt.path, tt.p.HTTPGet.Path)
				port, ok := c.hasPort(tt.p.HTTPGet.Port)
				require.True(t, ok, "port %v is not a port of the container", tt.p.HTTPGet.Port)
				require.Equal(t, listen, port, "the probe's port is not the one the orchestrator listens on")
			})
		}
	}
}

func TestWorkerShutdownGrace(t *testing.T) {
	t.Parallel()
	for name, d := range deployments(t, loadManifests(t)) {
		c := orchestratorContainer(t, d)
		if role, _ := c.env("ORCHESTRATOR_ROLE"); role != "worker" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			grace := jobs.KillGraceDefault
			if v, ok := c.env("ORCHESTRATOR_KILL_GRACE"); ok {
				var err error
				grace, err = time.ParseDuration(v)
				require.NoError(t, err)
			}
			tgps := d.Spec.Template.Spec.TerminationGracePeriodSeconds
			require.NotNil(t, tgps, "terminationGracePeriodSeconds")
			require.GreaterOrEqual(t, time.Duration(*tgps)*time.Second, grace+shutdownMargin,
				"running commands must get SIGTERM and the kill grace (%s) before the pod is killed", grace)
		})
	}
}

// TestLeaseTimings checks that every Deployment reaps after the same ORCHESTRATOR_ORPHAN_AFTER, and that each
// worker's fence fits in it as the orchestrator checks at start: the margin is at least the kill grace plus
// jobs.FenceAllowance, and leaves at least two heartbeats of the lease.
func TestLeaseTimings(t *testing.T) {
	t.Parallel()
	duration := func(t *testing.T, c container, name string, def time.Duration) time.Duration {
		t.Helper()
		v, ok := c.env(name)
		if !ok {
			return def
		}
		d, err := time.ParseDuration(v)
		require.NoError(t, err, name)
		return d
	}
	orphanAfter := map[string]time.Duration{}
	for name, d := range deployments(t, loadManifests(t)) {
		c := orchestratorContainer(t, d)
		oa := duration(t, c, "ORCHESTRATOR_ORPHAN_AFTER", jobs.OrphanAfterDefault)
		orphanAfter[name] = oa
		if role, _ := c.env("ORCHESTRATOR_ROLE"); role == "web" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			heartbeat := duration(t, c, "ORCHESTRATOR_HEARTBEAT_INTERVAL", jobs.HeartbeatIntervalDefault)
			grace := duration(t, c, "ORCHESTRATOR_KILL_GRACE", jobs.KillGraceDefault)
			margin := duration(t, c, "ORCHESTRATOR_FENCE_MARGIN", jobs.FenceMarginFor(oa, grace))
			require.GreaterOrEqual(t, margin, grace+jobs.FenceAllowance, "the fence margin must outlast the kill grace")
			require.GreaterOrEqual(t, oa-margin, 2*heartbeat, "the lease minus the margin must hold two heartbeats")
		})
	}
	for name, oa := range orphanAfter {
		require.Equal(t, orphanAfter["orchestrator-web"], oa, "%s reaps after %s, the web process after %s", name, oa, orphanAfter["orchestrator-web"])
	}
}

func TestPodSecurityAndResources(t *testing.T) {
	t.Parallel()
	for name, d := range deployments(t, loadManifests(t)) {
		t.Run(name, func(t *testing.T) {
			pod := d.Spec.Template.Spec
			require.NotNil(t, pod.SecurityContext.RunAsNonRoot)
			require.True(t, *pod.SecurityContext.RunAsNonRoot)
			// The image's user is a name, which runAsNonRoot cannot check: the pod gives its number.
			require.NotNil(t, pod.SecurityContext.RunAsUser)
			require.Positive(t, *pod.SecurityContext.RunAsUser)
			for _, c := range pod.Containers {
				require.NotEmpty(t, c.Image)
				require.NotNil(t, c.SecurityContext.AllowPrivilegeEscalation)
				require.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
				for _, resource := range []string{"cpu", "memory"} {
					require.Contains(t, c.Resources.Requests, resource, "requests")
					require.Contains(t, c.Resources.Limits, resource, "limits")
				}
			}
		})
	}
}

func TestGPUWorker(t *testing.T) {
	t.Parallel()
	deps := deployments(t, loadManifests(t))
	gpus := func(v any) int {
		if v == nil {
			return 0
		}
		n, err := strconv.Atoi(fmt.Sprint(v))
		require.NoError(t, err)
		return n
	}
	tests := []struct {
		deployment string
		gpus       int
	}{
		{webName, 0},
		{workerName, 0},
		{gpuWorkerName, 1},
	}
	for _, tt := range tests {
		t.Run(tt.deployment, func(t *testing.T) {
			d, ok := deps[tt.deployment]
			require.True(t, ok)
			c := orchestratorContainer(t, d)
			require.Equal(t, tt.gpus, gpus(c.Resources.Limits["nvidia.com/gpu"]), "limits")
			if req, ok := c.Resources.Requests["nvidia.com/gpu"]; ok {
				require.Equal(t, tt.gpus, gpus(req), "requests must equal limits for GPUs")
			}
			if tt.gpus > 0 {
				require.NotEmpty(t, d.Spec.Template.Spec.NodeSelector, "GPU pods go to GPU nodes")
			}
		})
	}
}
