package main

// Input normalisation and checks. None of this decides a verdict; it makes a
// hand-written policy look like what `kubectl get netpol -o json` returns
// (which it already does for real cluster output, making this a no-op there),
// and rejects input the apiserver would reject, where the engine would
// otherwise quietly fail open.

import (
	"errors"
	"fmt"
	"net"

	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// normalize returns the policy as the apiserver would store and return it:
//
//   - apiserver defaulting (k8s.io/kubernetes pkg/apis/networking/v1
//     defaults): a port without protocol gets TCP; empty policyTypes becomes
//     [Ingress], plus Egress when egress rules are present;
//   - a protobuf round trip through the k8s.io/api generated codec, the
//     encoding the apiserver stores in etcd. It turns `"ingress": []` (an
//     empty but present list, "deny all") into an absent list, which is how
//     the apiserver returns it. The engine takes a present-but-empty list to
//     mean "allow all", so skipping this would invert such policies.
func normalize(np *networkingv1.NetworkPolicy) (*networkingv1.NetworkPolicy, error) {
	np = np.DeepCopy()
	tcp := v1.ProtocolTCP
	defaultPorts := func(ports []networkingv1.NetworkPolicyPort) {
		for i := range ports {
			if ports[i].Protocol == nil {
				p := tcp
				ports[i].Protocol = &p
			}
		}
	}
	for i := range np.Spec.Ingress {
		defaultPorts(np.Spec.Ingress[i].Ports)
	}
	for i := range np.Spec.Egress {
		defaultPorts(np.Spec.Egress[i].Ports)
	}
	if len(np.Spec.PolicyTypes) == 0 {
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(np.Spec.Egress) != 0 {
			np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
	}

	data, err := np.Marshal()
	if err != nil {
		return nil, fmt.Errorf("protobuf encoding: %w", err)
	}
	stored := &networkingv1.NetworkPolicy{}
	if err := stored.Unmarshal(data); err != nil {
		return nil, fmt.Errorf("protobuf decoding: %w", err)
	}
	stored.TypeMeta = np.TypeMeta
	return stored, nil
}

// check rejects what the apiserver's validation would reject and the engine
// would evaluate as "match" or "no match" without complaint: unparsable
// selectors and CIDRs, empty or mixed peers, bad ports and policy types.
func check(np *networkingv1.NetworkPolicy) error {
	if _, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector); err != nil {
		return fmt.Errorf("spec.podSelector: %w", err)
	}
	for i, t := range np.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			return fmt.Errorf("spec.policyTypes[%d]: %q is not Ingress or Egress", i, t)
		}
	}
	for i, r := range np.Spec.Ingress {
		if err := checkPorts(r.Ports); err != nil {
			return fmt.Errorf("spec.ingress[%d]: %w", i, err)
		}
		for j, p := range r.From {
			if err := checkPeer(p); err != nil {
				return fmt.Errorf("spec.ingress[%d].from[%d]: %w", i, j, err)
			}
		}
	}
	for i, r := range np.Spec.Egress {
		if err := checkPorts(r.Ports); err != nil {
			return fmt.Errorf("spec.egress[%d]: %w", i, err)
		}
		for j, p := range r.To {
			if err := checkPeer(p); err != nil {
				return fmt.Errorf("spec.egress[%d].to[%d]: %w", i, j, err)
			}
		}
	}
	return nil
}

func checkPeer(p networkingv1.NetworkPolicyPeer) error {
	if p.IPBlock != nil {
		if p.PodSelector != nil || p.NamespaceSelector != nil {
			return errors.New("ipBlock cannot be combined with podSelector or namespaceSelector")
		}
		_, cidr, err := net.ParseCIDR(p.IPBlock.CIDR)
		if err != nil {
			return fmt.Errorf("ipBlock.cidr: %w", err)
		}
		for k, e := range p.IPBlock.Except {
			_, ex, err := net.ParseCIDR(e)
			if err != nil {
				return fmt.Errorf("ipBlock.except[%d]: %w", k, err)
			}
			exOnes, _ := ex.Mask.Size()
			ones, _ := cidr.Mask.Size()
			if !cidr.Contains(ex.IP) || exOnes <= ones {
				return fmt.Errorf("ipBlock.except[%d]: %s is not strictly within %s", k, e, p.IPBlock.CIDR)
			}
		}
		return nil
	}
	if p.PodSelector == nil && p.NamespaceSelector == nil {
		return errors.New("peer sets none of podSelector, namespaceSelector, ipBlock")
	}
	if p.PodSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(p.PodSelector); err != nil {
			return fmt.Errorf("podSelector: %w", err)
		}
	}
	if p.NamespaceSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(p.NamespaceSelector); err != nil {
			return fmt.Errorf("namespaceSelector: %w", err)
		}
	}
	return nil
}

func checkPorts(ports []networkingv1.NetworkPolicyPort) error {
	for i, p := range ports {
		if _, err := protocol(string(*p.Protocol)); err != nil {
			return fmt.Errorf("ports[%d]: %w", i, err)
		}
		if p.Port == nil {
			if p.EndPort != nil {
				return fmt.Errorf("ports[%d]: endPort without port", i)
			}
			continue
		}
		if p.Port.Type == intstr.Int {
			if v := p.Port.IntVal; v < 1 || v > 65535 {
				return fmt.Errorf("ports[%d]: port %d is not in 1-65535", i, v)
			}
			if p.EndPort != nil && (*p.EndPort < p.Port.IntVal || *p.EndPort > 65535) {
				return fmt.Errorf("ports[%d]: endPort %d is not in %d-65535", i, *p.EndPort, p.Port.IntVal)
			}
		} else {
			if p.Port.StrVal == "" {
				return fmt.Errorf("ports[%d]: empty port name", i)
			}
			if p.EndPort != nil {
				return fmt.Errorf("ports[%d]: endPort cannot be used with a named port", i)
			}
		}
	}
	return nil
}
