package main

// The engine: kube-network-policies' own NetworkPolicy dataplane controller,
// fed from in-memory informer stores instead of an apiserver.
//
// kube-network-policies decides every packet it sees from NFQUEUE with
// (*networkpolicy.Controller).evaluatePacket. That method is the whole
// verdict (egress of the source, then ingress of the destination, each over
// the NetworkPolicies selecting that pod), but it is unexported, and so is
// the packet type it takes. Its own unit tests build a Controller over a fake
// clientset's informers, add objects straight into the informer stores and
// call evaluatePacket; we do the same from outside the package:
//
//   - networkpolicy.NewController (exported) builds the Controller. Its
//     informers are plain client-go SharedIndexInformers that are never run,
//     read through client-go's listers; the clientset is a stand-in that only
//     provides the event sink the constructor wires up (the engine never
//     emits events). Nothing is started: no nftables, NFQUEUE or NRI socket
//     (the NRI stub is created, never run). Using client-go's fake clientset
//     and informer factory instead works the same but doubles the cold build.
//   - Namespaces, Pods and NetworkPolicies are added to those informers'
//     stores, as the upstream tests do; the Controller then resolves packet
//     addresses to pods through its own pod-IP index on the pod store, and
//     namespace selectors through the namespace lister.
//   - evaluatePacket is reached with //go:linkname, and enginePacket mirrors
//     the field layout of the unexported packet struct.
//
// The linkname and the mirrored struct are tied to the engine version pinned
// in go.mod; the unit tests assert verdicts that depend on every field used
// (addresses in both directions, port, protocol), so a mismatch after an
// upgrade fails them.

import (
	"context"
	"fmt"
	"net"
	_ "unsafe" // for go:linkname

	"github.com/sirupsen/logrus"
	v1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	coreinformers "k8s.io/client-go/informers/core/v1"
	networkinginformers "k8s.io/client-go/informers/networking/v1"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

// engineModule is the module providing the verdicts.
const engineModule = "sigs.k8s.io/kube-network-policies"

// enginePacket mirrors networkpolicy.packet (pkg/networkpolicy/packet.go) of
// sigs.k8s.io/kube-network-policies v0.8.0, field for field.
type enginePacket struct {
	id      uint32
	family  v1.IPFamily
	srcIP   net.IP
	dstIP   net.IP
	proto   v1.Protocol
	srcPort int
	dstPort int
	payload []byte
}

//go:linkname engineEvaluatePacket sigs.k8s.io/kube-network-policies/pkg/networkpolicy.(*Controller).evaluatePacket
func engineEvaluatePacket(c *networkpolicy.Controller, ctx context.Context, p enginePacket) bool

// sourcePort is the ephemeral source port of every modelled connection.
// NetworkPolicy never looks at it, but the engine's packets carry one.
const sourcePort = 43210

// engine is one kube-network-policies Controller loaded with a cluster state.
type engine struct {
	ctrl *networkpolicy.Controller
}

// The engine's constructor creates (never runs) a containerd NRI plugin stub,
// which announces itself at info level through logrus' standard logger (the
// stub captures its logger at package init, so nri's log.Set is too late).
// Keep warnings and errors, drop the chatter.
func init() { logrus.SetLevel(logrus.WarnLevel) }

// newEngine builds a Controller and loads the objects into its stores.
func newEngine(namespaces []*v1.Namespace, pods []*v1.Pod, policies []*networkingv1.NetworkPolicy) (*engine, error) {
	client := eventsOnlyClient{}
	npInf := newNetpolInformer()
	nsInf := newNamespaceInformer()
	podInf := newPodInformer()
	ctrl, err := networkpolicy.NewController(client, npInf, nsInf, podInf,
		nil,           // nodes: only read for (Baseline)AdminNetworkPolicy
		nil, nil, nil, // no (Baseline)AdminNetworkPolicy client or informers
		networkpolicy.Config{
			NodeName:    oracleNode,
			QueueID:     100,
			NFTableName: "netpol-oracle",
		})
	if err != nil {
		return nil, fmt.Errorf("creating the kube-network-policies controller: %w", err)
	}

	for _, ns := range namespaces {
		if err := nsInf.Informer().GetStore().Add(ns); err != nil {
			return nil, fmt.Errorf("loading namespace %s: %w", ns.Name, err)
		}
	}
	for _, p := range pods {
		if err := podInf.Informer().GetStore().Add(p); err != nil {
			return nil, fmt.Errorf("loading pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	for _, np := range policies {
		if err := npInf.Informer().GetStore().Add(np); err != nil {
			return nil, fmt.Errorf("loading networkpolicy %s/%s: %w", np.Namespace, np.Name, err)
		}
	}
	return &engine{ctrl: ctrl}, nil
}

// allowed asks the engine whether a new connection src→dst:port/proto passes.
func (e *engine) allowed(id uint32, src, dst net.IP, port int, proto v1.Protocol) bool {
	family := v1.IPv4Protocol
	if src.To4() == nil {
		family = v1.IPv6Protocol
	}
	return engineEvaluatePacket(e.ctrl, context.Background(), enginePacket{
		id:      id,
		family:  family,
		srcIP:   src,
		dstIP:   dst,
		proto:   proto,
		srcPort: sourcePort,
		dstPort: port,
	})
}

// eventsOnlyClient is the clientset handed to the engine. Its constructor
// only calls CoreV1().Events("") to wire an event sink, which is never
// written to; any other call would be a nil dereference and fail the tests.
type eventsOnlyClient struct{ kubernetes.Interface }

func (eventsOnlyClient) CoreV1() corev1client.CoreV1Interface { return eventsOnlyCore{} }

type eventsOnlyCore struct{ corev1client.CoreV1Interface }

func (eventsOnlyCore) Events(string) corev1client.EventInterface { return nil }

// storeInformer is an informer used only as an indexed store: never run, so
// its ListWatch is never called.
func storeInformer(obj runtime.Object) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformer(&cache.ListWatch{}, obj, 0,
		cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

type podInformer struct{ inf cache.SharedIndexInformer }

func newPodInformer() podInformer                         { return podInformer{storeInformer(&v1.Pod{})} }
func (p podInformer) Informer() cache.SharedIndexInformer { return p.inf }
func (p podInformer) Lister() corelisters.PodLister {
	return corelisters.NewPodLister(p.inf.GetIndexer())
}

type namespaceInformer struct{ inf cache.SharedIndexInformer }

func newNamespaceInformer() namespaceInformer {
	return namespaceInformer{storeInformer(&v1.Namespace{})}
}
func (p namespaceInformer) Informer() cache.SharedIndexInformer { return p.inf }
func (p namespaceInformer) Lister() corelisters.NamespaceLister {
	return corelisters.NewNamespaceLister(p.inf.GetIndexer())
}

type netpolInformer struct{ inf cache.SharedIndexInformer }

func newNetpolInformer() netpolInformer {
	return netpolInformer{storeInformer(&networkingv1.NetworkPolicy{})}
}
func (p netpolInformer) Informer() cache.SharedIndexInformer { return p.inf }
func (p netpolInformer) Lister() networkinglisters.NetworkPolicyLister {
	return networkinglisters.NewNetworkPolicyLister(p.inf.GetIndexer())
}

var (
	_ kubernetes.Interface                      = eventsOnlyClient{}
	_ coreinformers.PodInformer                 = podInformer{}
	_ coreinformers.NamespaceInformer           = namespaceInformer{}
	_ networkinginformers.NetworkPolicyInformer = netpolInformer{}
)
