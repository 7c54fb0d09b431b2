// Command controlplane runs the pieces of a local Kubernetes control plane
// for bulkhead's tests and demo: etcd, kube-apiserver and
// kube-controller-manager, each as its own process (they share process-wide
// globals such as feature gates and signal handlers), plus a `pki` step that
// writes the certificates and kubeconfigs they need.
//
// Test and development infrastructure only; the product is the Rust crate.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
	_ "time/tzdata"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "pki":
		if len(args) != 2 {
			fail("usage: controlplane pki DIR APISERVER_PORT")
		}
		if err := writePKI(args[0], args[1]); err != nil {
			fail("pki: %v", err)
		}
	case "etcd":
		if len(args) != 3 {
			fail("usage: controlplane etcd DATA_DIR CLIENT_PORT PEER_PORT")
		}
		if err := runEtcd(args[0], args[1], args[2]); err != nil {
			fail("etcd: %v", err)
		}
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(args)
		os.Exit(cli.Run(cmd))
	default:
		usage()
	}
}

func usage() {
	fail("usage: controlplane pki|etcd|kube-apiserver|kube-controller-manager ARGS...")
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(2)
}

// runEtcd runs a single-member etcd on loopback until SIGTERM/SIGINT.
func runEtcd(dir, clientPort, peerPort string) error {
	cfg := embed.NewConfig()
	cfg.Name = "bulkhead-e2e"
	cfg.Dir = dir
	// A throwaway test store: fsync buys durability we do not need and
	// costs most of etcd's write latency on a small VM.
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	client := url.URL{Scheme: "http", Host: "127.0.0.1:" + clientPort}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:" + peerPort}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.QuotaBackendBytes = 8 << 30
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
		fmt.Fprintln(os.Stderr, "etcd ready on", client.String())
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		return fmt.Errorf("not ready after 60s")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		fmt.Fprintln(os.Stderr, "etcd stopping on", s)
		return nil
	case err := <-e.Err():
		return err
	}
}

type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// writePKI writes a CA, the apiserver serving certificate, client
// certificates for the admin and the controller manager, the service-account
// signing key, and a kubeconfig per client. Existing files are kept, so a
// restarted cluster keeps trusting the same CA.
func writePKI(dir, port string) error {
	if _, err := os.Stat(filepath.Join(dir, "admin.kubeconfig")); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := newCert(nil, pkix.Name{CommonName: "bulkhead-e2e-ca"}, true, nil, nil, nil)
	if err != nil {
		return err
	}
	serving, err := newCert(ca, pkix.Name{CommonName: "kube-apiserver"}, false,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
		[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})
	if err != nil {
		return err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	saDER, err := x509.MarshalPKCS8PrivateKey(saKey)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt":        pemCert(ca),
		"ca.key":        pemKey(ca),
		"apiserver.crt": pemCert(serving),
		"apiserver.key": pemKey(serving),
		"sa.key":        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: saDER}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	// The admin kubeconfig comes last: its presence marks the PKI complete.
	clients := []struct {
		file    string
		subject pkix.Name
	}{
		{"controller-manager", pkix.Name{CommonName: "system:kube-controller-manager"}},
		{"admin", pkix.Name{CommonName: "bulkhead-e2e-admin", Organization: []string{"system:masters"}}},
	}
	server := "https://127.0.0.1:" + port
	for _, c := range clients {
		kp, err := newCert(ca, c.subject, false, nil, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
		if err != nil {
			return err
		}
		if err := writeKubeconfig(filepath.Join(dir, c.file+".kubeconfig"), server, ca, kp); err != nil {
			return err
		}
	}
	return nil
}

func newCert(parent *keyPair, subject pkix.Name, isCA bool, dns []string, ips []net.IP, usage []x509.ExtKeyUsage) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	signerCert, signerKey := tmpl, key
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signerKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &keyPair{cert: cert, key: key}, nil
}

func pemCert(kp *keyPair) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.cert.Raw})
}

func pemKey(kp *keyPair) []byte {
	der, err := x509.MarshalECPrivateKey(kp.key)
	if err != nil {
		fail("marshal key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func writeKubeconfig(path, server string, ca, client *keyPair) error {
	b64 := base64.StdEncoding.EncodeToString
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: bulkhead-e2e
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: bulkhead-e2e
  context:
    cluster: bulkhead-e2e
    user: %s
current-context: bulkhead-e2e
`, server, b64(pemCert(ca)), client.cert.Subject.CommonName, b64(pemCert(client)), b64(pemKey(client)), client.cert.Subject.CommonName)
	return os.WriteFile(path, []byte(cfg), 0o600)
}
