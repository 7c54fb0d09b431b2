//! Cross-tenant connectivity, computed over the live NetworkPolicies.
//!
//! The product cannot ship the Go oracle the tests use (`e2e/netpol-oracle`,
//! the packet evaluator of sigs.k8s.io/kube-network-policies), so this is an
//! equivalent computation: [`Model::verdict`] applies networking.k8s.io/v1
//! semantics to one connection, and `tests/verify.rs` checks it gives the
//! same answer as that independent engine on the operator's policies and on
//! adversarial ones (label selectors, ipBlocks with except, named ports,
//! port ranges, defaulted policyTypes).
//!
//! The check ([`run`]) asks, for every namespace of the tenant and every
//! namespace of every other tenant, in both directions, whether *any* pod
//! could reach *any* pod: pods are modelled from the policies themselves
//! (one unlabelled pod, and pods carrying the labels each selector asks for,
//! alone and pairwise combined, with the named ports the rules use and
//! addresses inside each ipBlock that overlaps the pod network), on every
//! port the rules name and one they do not, for TCP, UDP and SCTP.
//! NetworkPolicy rules only ever allow, so these pods are enough: a real pod
//! can only match fewer rules.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::checks::CROSS_TENANT_TRAFFIC;
use super::packed::Namespaces;
use super::{CheckResult, Ctx, Evidence};

/// Labels by key.
pub type Labels = BTreeMap<String, String>;

/// Whether a label selector matches `labels` (an empty selector matches everything).
pub fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    selects(selector, |key| labels.get(key).map(String::as_str))
}

/// [`selector_matches`] over a label lookup, so a namespace's labels need not be copied to add its name label.
pub fn selects<'a>(selector: &LabelSelector, label: impl Fn(&str) -> Option<&'a str>) -> bool {
    let by_labels = selector.match_labels.iter().flatten().all(|(k, v)| label(k) == Some(v.as_str()));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let has = |v: &str| values.iter().any(|x| x == v);
        match e.operator.as_str() {
            "In" => label(&e.key).is_some_and(has),
            "NotIn" => label(&e.key).is_none_or(|v| !has(v)),
            "Exists" => label(&e.key).is_some(),
            "DoesNotExist" => label(&e.key).is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// A named container port of a modelled pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamedPort {
    /// Port name.
    pub name: String,
    /// Number.
    pub port: i32,
    /// TCP, UDP or SCTP.
    pub protocol: String,
}

/// A modelled pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name (for reports).
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Address.
    pub ip: IpAddr,
    /// Named container ports.
    pub ports: Vec<NamedPort>,
}

/// One end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A pod.
    Pod(Pod),
    /// An address outside the cluster.
    Ip(IpAddr),
}

impl Endpoint {
    fn ip(&self) -> IpAddr {
        match self {
            Endpoint::Pod(p) => p.ip,
            Endpoint::Ip(ip) => *ip,
        }
    }

    fn pod(&self) -> Option<&Pod> {
        match self {
            Endpoint::Pod(p) => Some(p),
            Endpoint::Ip(_) => None,
        }
    }
}

/// What one side (egress of the source, ingress of the destination) decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Side {
    /// No policy selects the pod for this direction (or the end is not a pod): allowed.
    NotIsolated,
    /// Allowed by these policies (namespace/name).
    Allowed(Vec<String>),
    /// Isolated and no rule allows it.
    Denied,
}

/// The decision for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Egress of the source pod.
    pub egress: Side,
    /// Ingress of the destination pod.
    pub ingress: Side,
}

impl Verdict {
    /// Whether the connection is allowed.
    pub fn allowed(&self) -> bool {
        self.egress != Side::Denied && self.ingress != Side::Denied
    }
}

/// Namespaces (with labels) and their NetworkPolicies.
#[derive(Clone, Debug, Default)]
pub struct Model<'a> {
    /// Namespace labels by name; `kubernetes.io/metadata.name` is implied.
    /// Borrowed from the cluster view by the check: a copy per tenant was a
    /// megabytes-large transient every few seconds at a thousand tenants.
    pub namespaces: Cow<'a, Namespaces>,
    /// Policies by namespace.
    pub policies: BTreeMap<String, Vec<NetworkPolicy>>,
}

/// A policy's spec, or the empty spec the apiserver would default to, without copying it:
/// the model evaluates every policy for every candidate connection.
fn spec_of(p: &NetworkPolicy) -> std::borrow::Cow<'_, NetworkPolicySpec> {
    match &p.spec {
        Some(spec) => std::borrow::Cow::Borrowed(spec),
        None => std::borrow::Cow::Owned(NetworkPolicySpec::default()),
    }
}

fn types(p: &NetworkPolicy) -> (bool, bool) {
    let spec = spec_of(p);
    match &spec.policy_types {
        Some(t) => (t.iter().any(|x| x == "Ingress"), t.iter().any(|x| x == "Egress")),
        None => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
    }
}

fn in_block(ip: IpAddr, cidr: &str, except: &[String]) -> bool {
    let Ok(net) = cidr.parse::<IpNet>() else {
        return false;
    };
    net.contains(&ip) && !except.iter().filter_map(|e| e.parse::<IpNet>().ok()).any(|e| e.contains(&ip))
}

fn port_matches(ports: Option<&Vec<NetworkPolicyPort>>, dst: &Endpoint, port: i32, protocol: &str) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if proto != protocol {
            return false;
        }
        match &p.port {
            None => true,
            Some(IntOrString::Int(n)) => *n == port || p.end_port.is_some_and(|e| *n <= port && port <= e),
            Some(IntOrString::String(name)) => dst.pod().is_some_and(|pod| {
                pod.ports.iter().any(|np| &np.name == name && np.protocol == protocol && np.port == port)
            }),
        }
    })
}

impl Model<'_> {
    fn peer_matches(&self, peer: &NetworkPolicyPeer, policy_ns: &str, other: &Endpoint) -> bool {
        if let Some(block) = &peer.ip_block {
            return in_block(other.ip(), &block.cidr, block.except.as_deref().unwrap_or_default());
        }
        let Some(pod) = other.pod() else {
            return false;
        };
        let ns_ok = match &peer.namespace_selector {
            None => pod.namespace == policy_ns,
            // Every candidate connection asks this: no copy of the namespace's labels.
            Some(sel) => selects(sel, |key| self.namespaces.label(&pod.namespace, key)),
        };
        ns_ok && peer.pod_selector.as_ref().is_none_or(|sel| selector_matches(sel, &pod.labels))
    }

    /// Egress of `src` (if a pod) or ingress of `dst` (if a pod).
    fn side(&self, src: &Endpoint, dst: &Endpoint, port: i32, protocol: &str, egress: bool) -> Side {
        let subject = if egress { src } else { dst };
        let Some(pod) = subject.pod() else {
            return Side::NotIsolated;
        };
        let mut isolated = false;
        let mut allowed_by = Vec::new();
        for p in self.policies.get(&pod.namespace).into_iter().flatten() {
            let spec = spec_of(p);
            let selects = spec.pod_selector.as_ref().is_none_or(|s| selector_matches(s, &pod.labels));
            let (ingress_type, egress_type) = types(p);
            if !selects || !(if egress { egress_type } else { ingress_type }) {
                continue;
            }
            isolated = true;
            let allows = if egress {
                spec.egress.iter().flatten().any(|r| {
                    let peers_ok =
                        r.to.as_ref()
                            .filter(|t| !t.is_empty())
                            .is_none_or(|to| to.iter().any(|peer| self.peer_matches(peer, &pod.namespace, dst)));
                    peers_ok && port_matches(r.ports.as_ref(), dst, port, protocol)
                })
            } else {
                spec.ingress.iter().flatten().any(|r| {
                    let peers_ok = r
                        .from
                        .as_ref()
                        .filter(|f| !f.is_empty())
                        .is_none_or(|from| from.iter().any(|peer| self.peer_matches(peer, &pod.namespace, src)));
                    peers_ok && port_matches(r.ports.as_ref(), dst, port, protocol)
                })
            };
            if allows {
                allowed_by.push(format!("{}/{}", pod.namespace, p.name_any()));
            }
        }
        match (isolated, allowed_by.is_empty()) {
            (false, _) => Side::NotIsolated,
            (true, false) => Side::Allowed(allowed_by),
            (true, true) => Side::Denied,
        }
    }

    /// Whether a new connection from `src` to `dst` on `port`/`protocol` is allowed.
    pub fn verdict(&self, src: &Endpoint, dst: &Endpoint, port: i32, protocol: &str) -> Verdict {
        Verdict {
            egress: self.side(src, dst, port, protocol, true),
            ingress: self.side(src, dst, port, protocol, false),
        }
    }
}

/// Labels that satisfy `selector` where it can be satisfied alone.
fn witness(selector: &LabelSelector) -> Labels {
    let mut m = selector.match_labels.clone().unwrap_or_default();
    for e in selector.match_expressions.iter().flatten() {
        match e.operator.as_str() {
            "In" => {
                if let Some(v) = e.values.as_ref().and_then(|v| v.first()) {
                    m.entry(e.key.clone()).or_insert_with(|| v.clone());
                }
            }
            "Exists" => {
                m.entry(e.key.clone()).or_insert_with(|| "bulkhead-verify".into());
            }
            _ => {}
        }
    }
    m
}

fn merge(a: &Labels, b: &Labels) -> Option<Labels> {
    let mut out = a.clone();
    for (k, v) in b {
        match out.get(k) {
            Some(x) if x != v => return None,
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Some(out)
}

/// Label sets for pods of one namespace: none, each selector's, and pairs of them.
fn label_candidates(selectors: &[LabelSelector]) -> Vec<Labels> {
    let mut singles: BTreeSet<Labels> = BTreeSet::from([Labels::new()]);
    singles.extend(selectors.iter().map(witness));
    let singles: Vec<Labels> = singles.into_iter().take(24).collect();
    let mut all: BTreeSet<Labels> = singles.iter().cloned().collect();
    for (i, a) in singles.iter().enumerate() {
        for b in &singles[i + 1..] {
            if let Some(m) = merge(a, b) {
                all.insert(m);
            }
        }
    }
    all.into_iter().collect()
}

/// An address inside `cidr` (minus `except`) and inside one of the pod networks.
fn ip_in(cidr: &str, except: &[String], pod_cidrs: &[IpNet]) -> Option<IpAddr> {
    let block: IpNet = cidr.parse().ok()?;
    let excepts: Vec<IpNet> = except.iter().filter_map(|e| e.parse().ok()).collect();
    for pod_net in pod_cidrs {
        let inter = if pod_net.contains(&block) {
            block
        } else if block.contains(pod_net) {
            *pod_net
        } else {
            continue;
        };
        let mut candidates = vec![inter.network()];
        candidates.extend(inter.hosts().take(1));
        for e in &excepts {
            if let Some(next) = next_ip(e.broadcast()) {
                candidates.push(next);
            }
        }
        if let Some(ip) =
            candidates.into_iter().find(|ip| inter.contains(ip) && !excepts.iter().any(|e| e.contains(ip)))
        {
            return Some(ip);
        }
    }
    None
}

fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v) => u32::from(v).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v) => u128::from(v).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

fn nth_ip(net: &IpNet, n: u32) -> IpAddr {
    match net.network() {
        IpAddr::V4(v) => IpAddr::V4(u32::from(v).wrapping_add(n).into()),
        IpAddr::V6(v) => IpAddr::V6(u128::from(v).wrapping_add(n as u128).into()),
    }
}

/// What the policies of a source and a destination namespace mention.
#[derive(Default)]
struct Mentions {
    src_selectors: Vec<LabelSelector>,
    dst_selectors: Vec<LabelSelector>,
    src_ips: Vec<IpAddr>,
    dst_ips: Vec<IpAddr>,
    ports: BTreeSet<(String, i32)>,
    named: BTreeSet<(String, String)>,
}

fn mentions(model: &Model<'_>, src_ns: &str, dst_ns: &str, pod_cidrs: &[IpNet]) -> Mentions {
    let mut m = Mentions::default();
    let add_ports = |m: &mut Mentions, ports: Option<&Vec<NetworkPolicyPort>>| {
        for p in ports.into_iter().flatten() {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            match &p.port {
                Some(IntOrString::Int(n)) => {
                    m.ports.insert((proto.clone(), *n));
                    if let Some(e) = p.end_port {
                        m.ports.insert((proto.clone(), e));
                    }
                }
                Some(IntOrString::String(name)) => {
                    m.named.insert((name.clone(), proto.clone()));
                }
                None => {}
            }
        }
    };
    for p in model.policies.get(src_ns).into_iter().flatten() {
        let spec = spec_of(p);
        m.src_selectors.extend(spec.pod_selector.clone());
        for r in spec.egress.iter().flatten() {
            add_ports(&mut m, r.ports.as_ref());
            for peer in r.to.iter().flatten() {
                m.dst_selectors.extend(peer.pod_selector.clone());
                if let Some(b) = &peer.ip_block {
                    m.dst_ips.extend(ip_in(&b.cidr, b.except.as_deref().unwrap_or_default(), pod_cidrs));
                }
            }
        }
    }
    for p in model.policies.get(dst_ns).into_iter().flatten() {
        let spec = spec_of(p);
        m.dst_selectors.extend(spec.pod_selector.clone());
        for r in spec.ingress.iter().flatten() {
            add_ports(&mut m, r.ports.as_ref());
            for peer in r.from.iter().flatten() {
                m.src_selectors.extend(peer.pod_selector.clone());
                if let Some(b) = &peer.ip_block {
                    m.src_ips.extend(ip_in(&b.cidr, b.except.as_deref().unwrap_or_default(), pod_cidrs));
                }
            }
        }
    }
    m
}

/// A connection the model allows.
#[derive(Clone, Debug)]
pub struct Flow {
    /// Source pod.
    pub src: Pod,
    /// Destination pod.
    pub dst: Pod,
    /// Port.
    pub port: i32,
    /// Protocol.
    pub protocol: String,
    /// Why.
    pub verdict: Verdict,
}

fn describe_pod(p: &Pod) -> String {
    let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}/<pod {{{}}} {}>", p.namespace, labels.join(","), p.ip)
}

fn describe_side(s: &Side) -> String {
    match s {
        Side::NotIsolated => "not isolated".into(),
        Side::Allowed(by) => format!("allowed by {}", by.join(", ")),
        Side::Denied => "denied".into(),
    }
}

impl Flow {
    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "{} → {} {}/{}: egress {}, ingress {}",
            describe_pod(&self.src),
            describe_pod(&self.dst),
            self.port,
            self.protocol,
            describe_side(&self.verdict.egress),
            describe_side(&self.verdict.ingress)
        )
    }
}

/// Every connection any modelled pod of `src_ns` could open to any of `dst_ns`: (flows allowed, flows evaluated).
pub fn reachable(model: &Model<'_>, src_ns: &str, dst_ns: &str, pod_cidrs: &[IpNet]) -> (Vec<Flow>, usize) {
    let m = mentions(model, src_ns, dst_ns, pod_cidrs);
    let base = pod_cidrs.first().copied().unwrap_or_else(|| "10.244.0.0/16".parse().expect("valid CIDR"));
    let named_ports: Vec<NamedPort> = m
        .named
        .iter()
        .enumerate()
        .map(|(i, (name, proto))| NamedPort { name: name.clone(), port: 30000 + i as i32, protocol: proto.clone() })
        .collect();
    let pods = |ns: &str, selectors: &[LabelSelector], ips: &[IpAddr], first: u32| -> Vec<Pod> {
        let mut addrs = vec![nth_ip(&base, first)];
        addrs.extend(ips.iter().copied());
        addrs.sort();
        addrs.dedup();
        let mut out = Vec::new();
        for labels in label_candidates(selectors) {
            for ip in &addrs {
                out.push(Pod {
                    namespace: ns.into(),
                    name: "model".into(),
                    labels: labels.clone(),
                    ip: *ip,
                    ports: named_ports.clone(),
                });
            }
        }
        out
    };
    let srcs = pods(src_ns, &m.src_selectors, &m.src_ips, 10);
    let dsts = pods(dst_ns, &m.dst_selectors, &m.dst_ips, 11);
    let mut queries: BTreeSet<(String, i32)> = m.ports.clone();
    queries.extend(named_ports.iter().map(|p| (p.protocol.clone(), p.port)));
    for proto in ["TCP", "UDP", "SCTP"] {
        // A port no rule names.
        let unnamed = (1..).find(|p| !queries.contains(&(proto.to_string(), *p))).unwrap_or(1);
        queries.insert((proto.to_string(), unnamed));
    }
    let mut allowed = Vec::new();
    let mut evaluated = 0;
    for s in &srcs {
        for d in &dsts {
            let (src, dst) = (Endpoint::Pod(s.clone()), Endpoint::Pod(d.clone()));
            for (proto, port) in &queries {
                evaluated += 1;
                let v = model.verdict(&src, &dst, *port, proto);
                if v.allowed() {
                    allowed.push(Flow {
                        src: s.clone(),
                        dst: d.clone(),
                        port: *port,
                        protocol: proto.clone(),
                        verdict: v,
                    });
                }
            }
        }
    }
    (allowed, evaluated)
}

/// The cross-tenant connectivity check of one tenant.
pub fn run(ctx: &Ctx<'_>) -> CheckResult {
    let own = ctx.facts.namespaces();
    let others = ctx.view.other_tenant_namespaces(&ctx.facts.name, own);
    if others.is_empty() {
        return CheckResult::not_applicable(
            CROSS_TENANT_TRAFFIC,
            "there is no other tenant's namespace in the cluster",
        );
    }
    let mut model = Model { namespaces: Cow::Borrowed(&ctx.view.namespaces), policies: BTreeMap::new() };
    for ns in own {
        // The tenant's own policies as read just now.
        model.policies.insert(ns.clone(), ctx.facts.policies.get(ns).cloned().unwrap_or_default());
    }
    let cidrs = &ctx.view.pod_cidrs;
    let mut flows: Vec<Vec<Flow>> = own.iter().map(|_| Vec::new()).collect();
    let mut evaluated = vec![0; own.len()];
    // One other namespace's policies decoded at a time: a connection only
    // depends on the policies of its two ends, and all of them at once were
    // the verifier's largest transient at a thousand tenants.
    for other in others.keys() {
        let borrowed = !model.policies.contains_key(other);
        if borrowed {
            model.policies.insert(other.clone(), ctx.view.policies.get(other).unwrap_or_default());
        }
        for (i, ns) in own.iter().enumerate() {
            for (src, dst) in [(ns.as_str(), other.as_str()), (other.as_str(), ns.as_str())] {
                let (f, n) = reachable(&model, src, dst, cidrs);
                evaluated[i] += n;
                flows[i].extend(f);
            }
        }
        if borrowed {
            model.policies.remove(other);
        }
    }
    let mut evidence = Vec::new();
    for ((ns, flows), evaluated) in own.iter().zip(flows).zip(evaluated) {
        let request =
            format!("connections between {ns} and {} namespace(s) of other tenants, both directions", others.len());
        if flows.is_empty() {
            evidence.push(Evidence::plain(request, format!("all {evaluated} modelled connections denied"), true));
        } else {
            let peers: BTreeSet<String> = flows
                .iter()
                .map(|f| if f.src.namespace == *ns { f.dst.namespace.clone() } else { f.src.namespace.clone() })
                .collect();
            let shown: Vec<String> = flows.iter().take(5).map(Flow::describe).collect();
            evidence.push(Evidence::plain(
                request,
                format!(
                    "{} of {evaluated} modelled connections allowed (with {}), e.g. {}",
                    flows.len(),
                    peers
                        .into_iter()
                        .map(|p| format!("{p} of tenant {}", others.get(&p).cloned().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(", "),
                    shown.join(" | ")
                ),
                false,
            ));
        }
    }
    let n = own.len();
    CheckResult::judge(
        CROSS_TENANT_TRAFFIC,
        evidence,
        format!(
            "no connection between the tenant's {n} namespace(s) and {} other-tenant namespace(s), in either direction",
            others.len()
        ),
        |bad| format!("{bad} of the tenant's namespaces can exchange traffic with another tenant"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::network::NAMESPACE_NAME_LABEL;
    use serde_json::json;

    fn np(ns: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})).unwrap()
    }

    fn pod(ns: &str, labels: &[(&str, &str)], ip: &str) -> Endpoint {
        Endpoint::Pod(Pod {
            namespace: ns.into(),
            name: "p".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ip: ip.parse().unwrap(),
            ports: vec![NamedPort { name: "http".into(), port: 8080, protocol: "TCP".into() }],
        })
    }

    #[test]
    fn namespace_selectors_see_the_labels_and_the_implied_name() {
        let mut m = Model::default();
        m.namespaces.to_mut().insert("a", [("team", "x")]);
        // A stale copy of the name label loses to the namespace's real name.
        m.namespaces.to_mut().insert("b", [(NAMESPACE_NAME_LABEL, "stale")]);
        let peer = |sel: serde_json::Value| -> NetworkPolicyPeer {
            serde_json::from_value(json!({"namespaceSelector": sel})).unwrap()
        };
        let (a, b) = (pod("a", &[], "10.0.0.1"), pod("b", &[], "10.0.0.2"));
        assert!(m.peer_matches(&peer(json!({"matchLabels": {"team": "x"}})), "p", &a));
        assert!(!m.peer_matches(&peer(json!({"matchLabels": {"team": "x"}})), "p", &b));
        assert!(m.peer_matches(&peer(json!({"matchLabels": {NAMESPACE_NAME_LABEL: "b"}})), "p", &b));
        assert!(!m.peer_matches(&peer(json!({"matchLabels": {NAMESPACE_NAME_LABEL: "stale"}})), "p", &b));
        let not_in = json!({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["x"]}]});
        assert!(!m.peer_matches(&peer(not_in.clone()), "p", &a));
        assert!(m.peer_matches(&peer(not_in), "p", &b), "NotIn matches a namespace without the label");
        let absent = json!({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]});
        assert!(m.peer_matches(&peer(absent), "p", &b));
        let exists = json!({"matchExpressions": [{"key": NAMESPACE_NAME_LABEL, "operator": "Exists"}]});
        assert!(m.peer_matches(&peer(exists), "p", &a), "every namespace has its name label");
        assert!(m.peer_matches(&peer(json!({})), "p", &a), "an empty selector selects every namespace");
    }

    #[test]
    fn default_deny_isolates_and_allow_rules_add() {
        let mut m = Model::default();
        m.policies.insert(
            "a".into(),
            vec![np("a", "deny", json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}))],
        );
        let (a, b) = (pod("a", &[], "10.0.0.1"), pod("b", &[], "10.0.0.2"));
        assert!(!m.verdict(&a, &b, 80, "TCP").allowed());
        assert!(!m.verdict(&b, &a, 80, "TCP").allowed());
        assert!(m.verdict(&b, &pod("b", &[], "10.0.0.3"), 80, "TCP").allowed(), "b is not isolated");
        m.policies.get_mut("a").unwrap().push(np(
            "a",
            "open",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]}]}),
        ));
        let web = pod("a", &[("app", "web")], "10.0.0.4");
        assert!(m.verdict(&b, &web, 8080, "TCP").allowed());
        assert!(!m.verdict(&b, &web, 8081, "TCP").allowed());
        assert!(!m.verdict(&b, &a, 8080, "TCP").allowed(), "only app=web is opened");
    }

    #[test]
    fn witnesses_find_a_label_selected_hole() {
        let mut m = Model::default();
        let deny = json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]});
        m.policies.insert("a".into(), vec![np("a", "deny", deny.clone())]);
        m.policies.insert("b".into(), vec![np("b", "deny", deny)]);
        assert!(reachable(&m, "a", "b", &["10.244.0.0/16".parse().unwrap()]).0.is_empty());
        m.policies.get_mut("a").unwrap().push(np(
            "a",
            "out",
            json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": "10.244.7.0/24", "except": ["10.244.7.0/25"]}}], "ports": [{"port": 5000, "endPort": 5005, "protocol": "UDP"}]}]}),
        ));
        m.policies.get_mut("b").unwrap().push(np(
            "b",
            "in",
            json!({"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "a"}}, "podSelector": {"matchLabels": {"tier": "x"}}}]}]}),
        ));
        let (flows, _) = reachable(&m, "a", "b", &["10.244.0.0/16".parse().unwrap()]);
        assert!(!flows.is_empty(), "a pod labelled tier=x reaches a pod labelled role=db at 10.244.7.128+");
        let f = &flows[0];
        assert_eq!(f.src.labels.get("tier").map(String::as_str), Some("x"));
        assert_eq!(f.dst.labels.get("role").map(String::as_str), Some("db"));
        assert_eq!(f.protocol, "UDP");
        assert!((5000..=5005).contains(&f.port));
    }
}
