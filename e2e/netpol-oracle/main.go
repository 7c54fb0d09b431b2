// Command netpol-oracle answers "is this connection allowed?" for a modelled
// cluster (namespaces, pods, networking.k8s.io/v1 NetworkPolicies) using an
// independent, published NetworkPolicy engine: the packet evaluator of
// sigs.k8s.io/kube-network-policies (see engine.go). It does not implement
// NetworkPolicy semantics itself; it only decodes, normalises the input the
// way the apiserver would store it (see normalize.go), loads it into the
// engine and reports the engine's verdicts.
//
// Reads one JSON document on stdin and writes one on stdout:
//
//	in:  {"namespaces": [{"name", "labels"}], "policies": [NetworkPolicy...],
//	      "pods": [{"namespace", "name", "labels", "ip", "ports"?}],
//	      "queries": [{"id", "from": {"pod": "ns/name"} | {"ip": "1.2.3.4"},
//	                   "to": ..., "port": 443, "protocol": "TCP"}]}
//	out: {"results": [{"id", "allowed"}], "engine": "module@version"}
//
// Test infrastructure only; the product is the Rust crate.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strings"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// oracleNode is the node every modelled pod runs on.
const oracleNode = "netpol-oracle"

// Input is the document read from stdin.
type Input struct {
	Namespaces []Namespace       `json:"namespaces"`
	Policies   []json.RawMessage `json:"policies"`
	Pods       []Pod             `json:"pods"`
	Queries    []Query           `json:"queries"`
}

// Namespace is a namespace and its labels. kubernetes.io/metadata.name is
// added when absent, as the apiserver does.
type Namespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Pod is a running pod with one IP. Ports are optional named container
// ports, only needed when policies use named ports.
type Pod struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	IP        string            `json:"ip"`
	Ports     []ContainerPort   `json:"ports,omitempty"`
}

// ContainerPort is a named port of a pod's container.
type ContainerPort struct {
	Name     string `json:"name"`
	Port     int32  `json:"port"`
	Protocol string `json:"protocol,omitempty"`
}

// Query is one connection attempt.
type Query struct {
	ID       string   `json:"id"`
	From     Endpoint `json:"from"`
	To       Endpoint `json:"to"`
	Port     int      `json:"port"`
	Protocol string   `json:"protocol,omitempty"` // default TCP
}

// Endpoint is a modelled pod ("namespace/name") or an address outside the
// cluster.
type Endpoint struct {
	Pod string `json:"pod,omitempty"`
	IP  string `json:"ip,omitempty"`
}

// Output is the document written to stdout.
type Output struct {
	Results []Result `json:"results"`
	Engine  string   `json:"engine"`
}

// Result is the engine's verdict for one query.
type Result struct {
	ID      string `json:"id"`
	Allowed bool   `json:"allowed"`
}

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: netpol-oracle <input.json >output.json  (no arguments; see e2e/netpol-oracle/main.go)")
		os.Exit(2)
	}
	in, err := decodeInput(os.Stdin)
	if err != nil {
		fail(err)
	}
	out, err := evaluate(in)
	if err != nil {
		fail(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "netpol-oracle: writing output: %v\n", err)
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "netpol-oracle: %v\n", err)
	os.Exit(2)
}

// decodeInput reads exactly one JSON document; unknown fields are errors.
func decodeInput(r io.Reader) (*Input, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading input: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("empty input: expected a JSON object with namespaces, policies, pods and queries")
	}
	var in Input
	if err := strictUnmarshal(data, &in); err != nil {
		return nil, fmt.Errorf("malformed input: %w", err)
	}
	return &in, nil
}

func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON document")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return errors.New("trailing data after the JSON document")
	}
	return nil
}

// engineVersion names the engine module and version linked into this binary.
func engineVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == engineModule {
				if m.Replace != nil {
					return m.Path + "@" + m.Version + "=>" + m.Replace.Path + "@" + m.Replace.Version
				}
				return m.Path + "@" + m.Version
			}
		}
	}
	return engineModule + "@unknown"
}

// evaluate validates the input, loads it into the engine and answers the
// queries in order.
func evaluate(in *Input) (*Output, error) {
	namespaces, err := buildNamespaces(in.Namespaces)
	if err != nil {
		return nil, err
	}
	pods, podByKey, podByIP, err := buildPods(in.Pods, namespaces)
	if err != nil {
		return nil, err
	}
	policies, err := buildPolicies(in.Policies, namespaces)
	if err != nil {
		return nil, err
	}

	type flow struct {
		src, dst net.IP
		port     int
		proto    v1.Protocol
	}
	flows := make([]flow, len(in.Queries))
	seen := map[string]bool{}
	for i, q := range in.Queries {
		where := fmt.Sprintf("queries[%d]", i)
		if q.ID == "" {
			return nil, fmt.Errorf("%s: id is required", where)
		}
		where = fmt.Sprintf("queries[%d] (id %q)", i, q.ID)
		if seen[q.ID] {
			return nil, fmt.Errorf("%s: duplicate id", where)
		}
		seen[q.ID] = true
		src, err := resolve(q.From, podByKey, podByIP)
		if err != nil {
			return nil, fmt.Errorf("%s: from: %w", where, err)
		}
		dst, err := resolve(q.To, podByKey, podByIP)
		if err != nil {
			return nil, fmt.Errorf("%s: to: %w", where, err)
		}
		if (src.To4() == nil) != (dst.To4() == nil) {
			return nil, fmt.Errorf("%s: from and to are of different IP families", where)
		}
		if q.Port < 1 || q.Port > 65535 {
			return nil, fmt.Errorf("%s: port %d is not in 1-65535", where, q.Port)
		}
		proto, err := protocol(q.Protocol)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		flows[i] = flow{src: src, dst: dst, port: q.Port, proto: proto}
	}

	eng, err := newEngine(namespaces, pods, policies)
	if err != nil {
		return nil, err
	}
	out := &Output{Results: make([]Result, len(in.Queries)), Engine: engineVersion()}
	for i, f := range flows {
		out.Results[i] = Result{
			ID:      in.Queries[i].ID,
			Allowed: eng.allowed(uint32(i+1), f.src, f.dst, f.port, f.proto),
		}
	}
	return out, nil
}

func buildNamespaces(in []Namespace) ([]*v1.Namespace, error) {
	out := make([]*v1.Namespace, 0, len(in))
	seen := map[string]bool{}
	for i, n := range in {
		where := fmt.Sprintf("namespaces[%d]", i)
		if errs := validation.IsDNS1123Label(n.Name); len(errs) > 0 {
			return nil, fmt.Errorf("%s: invalid name %q: %s", where, n.Name, strings.Join(errs, "; "))
		}
		if seen[n.Name] {
			return nil, fmt.Errorf("%s: duplicate namespace %q", where, n.Name)
		}
		seen[n.Name] = true
		labels, err := checkLabels(n.Labels)
		if err != nil {
			return nil, fmt.Errorf("%s (%s): %w", where, n.Name, err)
		}
		if v, ok := labels[v1.LabelMetadataName]; ok && v != n.Name {
			return nil, fmt.Errorf("%s (%s): label %s=%q does not match the name (the apiserver forces it to the name)",
				where, n.Name, v1.LabelMetadataName, v)
		}
		labels[v1.LabelMetadataName] = n.Name
		out = append(out, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels}})
	}
	return out, nil
}

func buildPods(in []Pod, namespaces []*v1.Namespace) ([]*v1.Pod, map[string]*v1.Pod, map[string]*v1.Pod, error) {
	nsExists := map[string]bool{}
	for _, ns := range namespaces {
		nsExists[ns.Name] = true
	}
	var out []*v1.Pod
	byKey := map[string]*v1.Pod{}
	byIP := map[string]*v1.Pod{}
	for i, p := range in {
		where := fmt.Sprintf("pods[%d]", i)
		if p.Namespace == "" || p.Name == "" {
			return nil, nil, nil, fmt.Errorf("%s: namespace and name are required", where)
		}
		key := p.Namespace + "/" + p.Name
		where = fmt.Sprintf("pods[%d] (%s)", i, key)
		if !nsExists[p.Namespace] {
			return nil, nil, nil, fmt.Errorf("%s: namespace %q is not listed in namespaces", where, p.Namespace)
		}
		if byKey[key] != nil {
			return nil, nil, nil, fmt.Errorf("%s: duplicate pod", where)
		}
		ip := net.ParseIP(p.IP)
		if ip == nil {
			return nil, nil, nil, fmt.Errorf("%s: ip %q is not an IP address (every pod needs one; the engine finds pods by IP)", where, p.IP)
		}
		ipStr := ip.String()
		if other := byIP[ipStr]; other != nil {
			return nil, nil, nil, fmt.Errorf("%s: ip %s is also the ip of pod %s/%s", where, ipStr, other.Namespace, other.Name)
		}
		labels, err := checkLabels(p.Labels)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", where, err)
		}
		var ports []v1.ContainerPort
		for j, cp := range p.Ports {
			proto, err := protocol(cp.Protocol)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("%s: ports[%d]: %w", where, j, err)
			}
			if errs := validation.IsValidPortName(cp.Name); len(errs) > 0 {
				return nil, nil, nil, fmt.Errorf("%s: ports[%d]: invalid name %q: %s", where, j, cp.Name, strings.Join(errs, "; "))
			}
			if cp.Port < 1 || cp.Port > 65535 {
				return nil, nil, nil, fmt.Errorf("%s: ports[%d]: port %d is not in 1-65535", where, j, cp.Port)
			}
			ports = append(ports, v1.ContainerPort{Name: cp.Name, ContainerPort: cp.Port, Protocol: proto})
		}
		pod := &v1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: labels},
			Spec: v1.PodSpec{
				NodeName:   oracleNode,
				Containers: []v1.Container{{Name: "main", Ports: ports}},
			},
			Status: v1.PodStatus{
				Phase:  v1.PodRunning,
				PodIP:  ipStr,
				PodIPs: []v1.PodIP{{IP: ipStr}},
			},
		}
		out = append(out, pod)
		byKey[key] = pod
		byIP[ipStr] = pod
	}
	return out, byKey, byIP, nil
}

func checkLabels(in map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(in)+1)
	for k, v := range in {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("invalid label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, fmt.Errorf("invalid value %q for label %s: %s", v, k, strings.Join(errs, "; "))
		}
		out[k] = v
	}
	return out, nil
}

// resolve turns an endpoint into the address the engine sees.
func resolve(e Endpoint, byKey, byIP map[string]*v1.Pod) (net.IP, error) {
	switch {
	case e.Pod != "" && e.IP != "":
		return nil, errors.New(`give either "pod" or "ip", not both`)
	case e.Pod != "":
		p := byKey[e.Pod]
		if p == nil {
			return nil, fmt.Errorf("pod %q is not listed in pods (want \"namespace/name\")", e.Pod)
		}
		return net.ParseIP(p.Status.PodIP), nil
	case e.IP != "":
		ip := net.ParseIP(e.IP)
		if ip == nil {
			return nil, fmt.Errorf("ip %q is not an IP address", e.IP)
		}
		if p := byIP[ip.String()]; p != nil {
			return nil, fmt.Errorf("ip %s is the ip of pod %s/%s; use {\"pod\": %q} (\"ip\" is for addresses outside the cluster)",
				ip, p.Namespace, p.Name, p.Namespace+"/"+p.Name)
		}
		return ip, nil
	default:
		return nil, errors.New(`endpoint needs "pod" ("namespace/name") or "ip"`)
	}
}

func protocol(s string) (v1.Protocol, error) {
	switch v1.Protocol(s) {
	case "":
		return v1.ProtocolTCP, nil
	case v1.ProtocolTCP, v1.ProtocolUDP, v1.ProtocolSCTP:
		return v1.Protocol(s), nil
	default:
		return "", fmt.Errorf("protocol %q is not TCP, UDP or SCTP", s)
	}
}

// buildPolicies decodes each policy strictly, normalises it as the apiserver
// would store it and checks the parts the engine would otherwise silently
// fail open on.
func buildPolicies(raw []json.RawMessage, namespaces []*v1.Namespace) ([]*networkingv1.NetworkPolicy, error) {
	nsExists := map[string]bool{}
	for _, ns := range namespaces {
		nsExists[ns.Name] = true
	}
	seen := map[string]bool{}
	out := make([]*networkingv1.NetworkPolicy, 0, len(raw))
	for i, r := range raw {
		where := fmt.Sprintf("policies[%d]", i)
		np := &networkingv1.NetworkPolicy{}
		if err := strictUnmarshal(r, np); err != nil {
			return nil, fmt.Errorf("%s: not a networking.k8s.io/v1 NetworkPolicy: %w", where, err)
		}
		if np.Namespace == "" || np.Name == "" {
			return nil, fmt.Errorf("%s: metadata.namespace and metadata.name are required", where)
		}
		where = fmt.Sprintf("policies[%d] (%s/%s)", i, np.Namespace, np.Name)
		if np.Kind != "" && np.Kind != "NetworkPolicy" {
			return nil, fmt.Errorf("%s: kind is %q, want NetworkPolicy", where, np.Kind)
		}
		if np.APIVersion != "" && np.APIVersion != "networking.k8s.io/v1" {
			return nil, fmt.Errorf("%s: apiVersion is %q, want networking.k8s.io/v1", where, np.APIVersion)
		}
		if !nsExists[np.Namespace] {
			return nil, fmt.Errorf("%s: namespace %q is not listed in namespaces", where, np.Namespace)
		}
		key := np.Namespace + "/" + np.Name
		if seen[key] {
			return nil, fmt.Errorf("%s: duplicate policy", where)
		}
		seen[key] = true
		np, err := normalize(np)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if err := check(np); err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		out = append(out, np)
	}
	return out, nil
}
