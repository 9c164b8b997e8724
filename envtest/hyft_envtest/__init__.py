"""A real Kubernetes control plane for tests: etcd, kube-apiserver and friends,
built from Go modules, cached, and started on loopback (like controller-runtime's
envtest, plus kube-scheduler, kube-controller-manager and KWOK fake GPU nodes)."""
