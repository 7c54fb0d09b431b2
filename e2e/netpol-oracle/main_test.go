package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// The tiny cluster the tests share:
//
//	tenant   (pods web 10.0.1.1 app=web, worker 10.0.1.2 app=worker)
//	friend   (pod  f    10.0.2.1)
//	stranger (pod  s    10.0.3.1)
//	other    (pod  o    10.0.4.1)
//
// plus 203.0.113.9 / 198.51.100.7 outside the cluster.
func cluster(policies ...string) *Input {
	in := &Input{
		Namespaces: []Namespace{
			{Name: "tenant"}, {Name: "friend"}, {Name: "stranger", Labels: map[string]string{"team": "friend"}},
			{Name: "other", Labels: map[string]string{"kubernetes.io/metadata.name": "other"}},
		},
		Pods: []Pod{
			{Namespace: "tenant", Name: "web", Labels: map[string]string{"app": "web"}, IP: "10.0.1.1"},
			{Namespace: "tenant", Name: "worker", Labels: map[string]string{"app": "worker"}, IP: "10.0.1.2"},
			{Namespace: "friend", Name: "f", IP: "10.0.2.1"},
			{Namespace: "stranger", Name: "s", IP: "10.0.3.1"},
			{Namespace: "other", Name: "o", Labels: map[string]string{"app": "web"}, IP: "10.0.4.1"},
		},
	}
	for _, p := range policies {
		in.Policies = append(in.Policies, json.RawMessage(p))
	}
	return in
}

const defaultDenyTenant = `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
 "metadata":{"name":"deny","namespace":"tenant"},
 "spec":{"podSelector":{},"policyTypes":["Ingress","Egress"]}}`

// Allow from/to the namespace named "friend", selected by the immutable
// kubernetes.io/metadata.name label (as bulkhead does).
const allowFriendTenant = `{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
 "metadata":{"name":"allow-friend","namespace":"tenant"},
 "spec":{"podSelector":{},"policyTypes":["Ingress","Egress"],
  "ingress":[{"from":[{"namespaceSelector":{"matchExpressions":[
     {"key":"kubernetes.io/metadata.name","operator":"In","values":["friend"]}]}}]}],
  "egress":[{"to":[{"namespaceSelector":{"matchExpressions":[
     {"key":"kubernetes.io/metadata.name","operator":"In","values":["friend"]}]}}]},
   {"to":[{"ipBlock":{"cidr":"203.0.113.0/24"}}],"ports":[{"protocol":"TCP","port":443}]}]}}`

// A default deny in "other"; it must not affect "tenant".
const defaultDenyOther = `{"metadata":{"name":"deny","namespace":"other"},
 "spec":{"podSelector":{},"policyTypes":["Ingress","Egress"]}}`

type q struct {
	id        string
	from, to  Endpoint
	port      int
	proto     string
	wantAllow bool
}

func pod(key string) Endpoint { return Endpoint{Pod: key} }
func ip(a string) Endpoint    { return Endpoint{IP: a} }

func run(t *testing.T, in *Input, qs []q) *Output {
	t.Helper()
	for _, x := range qs {
		in.Queries = append(in.Queries, Query{ID: x.id, From: x.from, To: x.to, Port: x.port, Protocol: x.proto})
	}
	out, err := evaluate(in)
	if err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	if len(out.Results) != len(qs) {
		t.Fatalf("got %d results for %d queries", len(out.Results), len(qs))
	}
	for i, x := range qs {
		r := out.Results[i]
		if r.ID != x.id {
			t.Errorf("result %d has id %q, want %q", i, r.ID, x.id)
		}
		if r.Allowed != x.wantAllow {
			t.Errorf("%s: allowed=%v, want %v", x.id, r.Allowed, x.wantAllow)
		}
	}
	return out
}

func TestNoPoliciesAllowsEverything(t *testing.T) {
	out := run(t, cluster(), []q{
		{"web->o", pod("tenant/web"), pod("other/o"), 80, "TCP", true},
		{"s->web", pod("stranger/s"), pod("tenant/web"), 80, "UDP", true},
		{"web->ext", pod("tenant/web"), ip("198.51.100.7"), 22, "", true},
		{"ext->web", ip("198.51.100.7"), pod("tenant/web"), 22, "", true},
	})
	if out.Engine != "sigs.k8s.io/kube-network-policies@v0.8.0" {
		// go test binaries carry module build info too
		t.Errorf("engine = %q", out.Engine)
	}
}

func TestDefaultDenyBlocks(t *testing.T) {
	run(t, cluster(defaultDenyTenant), []q{
		{"within tenant", pod("tenant/web"), pod("tenant/worker"), 80, "TCP", false},
		{"tenant egress to other", pod("tenant/web"), pod("other/o"), 80, "TCP", false},
		{"ingress from other", pod("other/o"), pod("tenant/web"), 80, "TCP", false},
		{"egress to outside", pod("tenant/web"), ip("203.0.113.9"), 443, "TCP", false},
		{"ingress from outside", ip("203.0.113.9"), pod("tenant/web"), 443, "TCP", false},
		{"unrelated pair", pod("friend/f"), pod("other/o"), 80, "TCP", true},
	})
}

func TestNamespaceSelectorByNameAllows(t *testing.T) {
	run(t, cluster(defaultDenyTenant, allowFriendTenant), []q{
		{"friend->tenant", pod("friend/f"), pod("tenant/web"), 8080, "TCP", true},
		{"tenant->friend", pod("tenant/worker"), pod("friend/f"), 53, "UDP", true},
		// "stranger" carries team=friend but not the name label: no match.
		{"stranger->tenant", pod("stranger/s"), pod("tenant/web"), 8080, "TCP", false},
		{"tenant->stranger", pod("tenant/web"), pod("stranger/s"), 8080, "TCP", false},
		// the tenant's own namespace is not "friend"
		{"within tenant", pod("tenant/web"), pod("tenant/worker"), 80, "TCP", false},
	})
}

func TestIPBlockEgressAllowsOnlyThatPort(t *testing.T) {
	run(t, cluster(defaultDenyTenant, allowFriendTenant), []q{
		{"443/TCP in block", pod("tenant/web"), ip("203.0.113.9"), 443, "TCP", true},
		{"80/TCP in block", pod("tenant/web"), ip("203.0.113.9"), 80, "TCP", false},
		{"443/UDP in block", pod("tenant/web"), ip("203.0.113.9"), 443, "UDP", false},
		{"443/TCP outside block", pod("tenant/web"), ip("198.51.100.7"), 443, "TCP", false},
		// an egress ipBlock says nothing about ingress from that block
		{"block->tenant 443", ip("203.0.113.9"), pod("tenant/web"), 443, "TCP", false},
	})
}

func TestPolicyInAnotherNamespaceDoesNotApply(t *testing.T) {
	run(t, cluster(defaultDenyOther), []q{
		{"within tenant", pod("tenant/web"), pod("tenant/worker"), 80, "TCP", true},
		{"tenant->outside", pod("tenant/web"), ip("203.0.113.9"), 80, "TCP", true},
		{"friend->tenant", pod("friend/f"), pod("tenant/web"), 80, "TCP", true},
		{"tenant->other", pod("tenant/web"), pod("other/o"), 80, "TCP", false},
		{"other->tenant", pod("other/o"), pod("tenant/web"), 80, "TCP", false},
	})
}

// Egress and ingress are checked on the right ends: a policy isolating only
// the egress of tenant/web blocks web->worker but not worker->web.
func TestDirection(t *testing.T) {
	egressOnly := `{"metadata":{"name":"web-egress","namespace":"tenant"},
	 "spec":{"podSelector":{"matchLabels":{"app":"web"}},"policyTypes":["Egress"]}}`
	run(t, cluster(egressOnly), []q{
		{"web->worker", pod("tenant/web"), pod("tenant/worker"), 80, "TCP", false},
		{"worker->web", pod("tenant/worker"), pod("tenant/web"), 80, "TCP", true},
	})
	ingressWorker := `{"metadata":{"name":"worker-ingress","namespace":"tenant"},
	 "spec":{"podSelector":{"matchLabels":{"app":"worker"}},"policyTypes":["Ingress"],
	  "ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"web"}}}],"ports":[{"port":9000}]}]}}`
	run(t, cluster(ingressWorker), []q{
		{"web->worker 9000", pod("tenant/web"), pod("tenant/worker"), 9000, "TCP", true},
		{"web->worker 9001", pod("tenant/web"), pod("tenant/worker"), 9001, "TCP", false},
		// podSelector without namespaceSelector: own namespace only
		{"other/o (app=web)->worker", pod("other/o"), pod("tenant/worker"), 9000, "TCP", false},
		{"worker->web", pod("tenant/worker"), pod("tenant/web"), 9001, "TCP", true},
	})
}

// The input is normalised as the apiserver stores it: `"ingress": []` is
// "deny all" (the engine alone would read a present-but-empty list as allow
// all), `[{}]` is "allow all", missing policyTypes and protocol are defaulted.
func TestApiserverNormalisation(t *testing.T) {
	emptyList := `{"metadata":{"name":"p","namespace":"tenant"},
	 "spec":{"podSelector":{},"policyTypes":["Ingress"],"ingress":[]}}`
	oneEmptyRule := `{"metadata":{"name":"p","namespace":"tenant"},
	 "spec":{"podSelector":{},"policyTypes":["Ingress"],"ingress":[{}]}}`
	noTypes := `{"metadata":{"name":"p","namespace":"tenant"},
	 "spec":{"podSelector":{},"egress":[{"ports":[{"port":53}]}]}}`
	run(t, cluster(emptyList), []q{{"ingress: []", pod("friend/f"), pod("tenant/web"), 80, "TCP", false}})
	run(t, cluster(oneEmptyRule), []q{{"ingress: [{}]", pod("friend/f"), pod("tenant/web"), 80, "TCP", true}})
	run(t, cluster(noTypes), []q{
		{"defaulted Ingress isolates", pod("friend/f"), pod("tenant/web"), 80, "TCP", false},
		{"defaulted Egress 53/TCP", pod("tenant/web"), ip("203.0.113.9"), 53, "TCP", true},
		{"defaulted Egress not 53/UDP", pod("tenant/web"), ip("203.0.113.9"), 53, "UDP", false},
	})
}

func TestNamedPort(t *testing.T) {
	in := cluster(`{"metadata":{"name":"p","namespace":"tenant"},
	 "spec":{"podSelector":{},"policyTypes":["Ingress"],"ingress":[{"ports":[{"port":"http"}]}]}}`)
	in.Pods[0].Ports = []ContainerPort{{Name: "http", Port: 8080}}
	run(t, in, []q{
		{"web:8080 (http)", pod("friend/f"), pod("tenant/web"), 8080, "TCP", true},
		{"web:8081", pod("friend/f"), pod("tenant/web"), 8081, "TCP", false},
		{"worker:8080 (no such name)", pod("friend/f"), pod("tenant/worker"), 8080, "TCP", false},
	})
}

func TestMalformedInputIsRejected(t *testing.T) {
	for name, doc := range map[string]string{
		"empty":             ``,
		"not json":          `{`,
		"unknown field":     `{"namespaces":[],"pods":[],"policies":[],"queries":[],"extra":1}`,
		"trailing":          `{} {}`,
		"unknown ns":        `{"pods":[{"namespace":"x","name":"p","ip":"10.0.0.1"}]}`,
		"pod without ip":    `{"namespaces":[{"name":"x"}],"pods":[{"namespace":"x","name":"p"}]}`,
		"dup pod ip":        `{"namespaces":[{"name":"x"}],"pods":[{"namespace":"x","name":"p","ip":"10.0.0.1"},{"namespace":"x","name":"q","ip":"10.0.0.1"}]}`,
		"bad name label":    `{"namespaces":[{"name":"x","labels":{"kubernetes.io/metadata.name":"y"}}]}`,
		"policy typo":       `{"namespaces":[{"name":"x"}],"policies":[{"metadata":{"name":"p","namespace":"x"},"spec":{"podSelectr":{}}}]}`,
		"policy bad cidr":   `{"namespaces":[{"name":"x"}],"policies":[{"metadata":{"name":"p","namespace":"x"},"spec":{"podSelector":{},"egress":[{"to":[{"ipBlock":{"cidr":"10.0.0.0/33"}}]}]}}]}`,
		"policy bad op":     `{"namespaces":[{"name":"x"}],"policies":[{"metadata":{"name":"p","namespace":"x"},"spec":{"podSelector":{"matchExpressions":[{"key":"a","operator":"Is"}]}}}]}`,
		"policy empty peer": `{"namespaces":[{"name":"x"}],"policies":[{"metadata":{"name":"p","namespace":"x"},"spec":{"podSelector":{},"ingress":[{"from":[{}]}]}}]}`,
		"policy unknown ns": `{"namespaces":[{"name":"x"}],"policies":[{"metadata":{"name":"p","namespace":"y"},"spec":{"podSelector":{}}}]}`,
		"query no id":       `{"namespaces":[{"name":"x"}],"pods":[{"namespace":"x","name":"p","ip":"10.0.0.1"}],"queries":[{"from":{"pod":"x/p"},"to":{"ip":"1.1.1.1"},"port":1}]}`,
		"query unknown pod": `{"namespaces":[{"name":"x"}],"queries":[{"id":"a","from":{"pod":"x/p"},"to":{"ip":"1.1.1.1"},"port":1}]}`,
		"query both":        `{"namespaces":[{"name":"x"}],"pods":[{"namespace":"x","name":"p","ip":"10.0.0.1"}],"queries":[{"id":"a","from":{"pod":"x/p","ip":"1.1.1.1"},"to":{"ip":"1.1.1.1"},"port":1}]}`,
		"query pod ip":      `{"namespaces":[{"name":"x"}],"pods":[{"namespace":"x","name":"p","ip":"10.0.0.1"}],"queries":[{"id":"a","from":{"ip":"10.0.0.1"},"to":{"ip":"1.1.1.1"},"port":1}]}`,
		"query port 0":      `{"namespaces":[{"name":"x"}],"pods":[{"namespace":"x","name":"p","ip":"10.0.0.1"}],"queries":[{"id":"a","from":{"pod":"x/p"},"to":{"ip":"1.1.1.1"},"port":0}]}`,
		"query protocol":    `{"namespaces":[{"name":"x"}],"pods":[{"namespace":"x","name":"p","ip":"10.0.0.1"}],"queries":[{"id":"a","from":{"pod":"x/p"},"to":{"ip":"1.1.1.1"},"port":1,"protocol":"ICMP"}]}`,
		"query dup id":      `{"namespaces":[{"name":"x"}],"pods":[{"namespace":"x","name":"p","ip":"10.0.0.1"}],"queries":[{"id":"a","from":{"pod":"x/p"},"to":{"ip":"1.1.1.1"},"port":1},{"id":"a","from":{"pod":"x/p"},"to":{"ip":"1.1.1.1"},"port":2}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			in, err := decodeInput(strings.NewReader(doc))
			if err == nil {
				_, err = evaluate(in)
			}
			if err == nil {
				t.Fatalf("accepted %s", doc)
			}
			t.Logf("%v", err)
		})
	}
}

// testdata/sample.json against testdata/sample.expected.json.
func TestSample(t *testing.T) {
	data, err := os.ReadFile("testdata/sample.json")
	if err != nil {
		t.Fatal(err)
	}
	in, err := decodeInput(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	out, err := evaluate(in)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.MarshalIndent(out, "", "  ")
	want, err := os.ReadFile("testdata/sample.expected.json")
	if err != nil {
		t.Fatal(err)
	}
	if string(bytes.TrimSpace(got)) != string(bytes.TrimSpace(want)) {
		t.Errorf("sample output differs from testdata/sample.expected.json:\n%s", got)
	}
}
