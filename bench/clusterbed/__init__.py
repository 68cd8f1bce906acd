"""The cluster test bed: Kubernetes' part played by real processes (see docs/kubernetes.md, "The cluster bed")."""
