"""What a node offers pods: each provider's kubelet reservations, as the provider states them.

allocatable = capacity - kube-reserved - system-reserved - hard eviction threshold (Kubernetes,
"Reserve Compute Resources for System Daemons"). The formulas below are the providers' own;
each is checked against the provider's worked examples in test_cluster_presets.py.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024**2
GIB = 1024**3
MB = 1000**2
# The kubelet's default hard eviction threshold, memory.available<100Mi, which GKE, EKS
# (nodeadm's evictionHard) and AKS from 1.29 keep.
EVICTION_HARD = 100 * MIB
# What a GPU node's DaemonSets request besides our pod (kube-proxy, the CNI, logging and
# metrics agents, NVIDIA's device plugin and DCGM exporter): our budget, not a provider figure.
DAEMONSETS_CPU_MILLI = 500
DAEMONSETS_MEMORY = 1 * GIB
# The kernel reports less memory than the machine type names (firmware, kernel, crash
# kernel): about 2-4 % on cloud VMs; 5 % keeps the estimate on the safe side.
KERNEL_SHARE = 0.05


@dataclass(frozen=True)
class Node:
    """A machine type as its provider lists it."""

    name: str
    vcpus: int
    memory_bytes: int
    max_pods: int = 110

    @property
    def capacity_memory(self) -> int:
        return int(self.memory_bytes * (1 - KERNEL_SHARE))


def _tiered(total: float, tiers: list[tuple[float, float]]) -> float:
    """The sum over tiers of (size, rate): rate applied to the part of total in that tier; the
    last tier's size is unbounded."""
    reserved, start = 0.0, 0.0
    for size, rate in tiers:
        end = start + size
        reserved += max(0.0, min(total, end) - start) * rate
        start = end
    return reserved


# Kubernetes Engine, "Plan GKE Standard node sizes: memory and CPU reservations": 6 % of the
# first core, 1 % of the next, 0.5 % of the next 2, 0.25 % above 4; memory 25 % of the first
# 4 GiB, 20 % of the next 4, 10 % of the next 8, 6 % of the next 112, 2 % above 128 GiB
# (255 MiB below 1 GiB); plus the 100 MiB eviction threshold.
_CORE_TIERS = [(1000, 0.06), (1000, 0.01), (2000, 0.005), (float("inf"), 0.0025)]
_GKE_MEMORY_TIERS = [
    (4 * GIB, 0.25),
    (4 * GIB, 0.20),
    (8 * GIB, 0.10),
    (112 * GIB, 0.06),
    (float("inf"), 0.02),
]


def gke_reserved(node: Node) -> tuple[int, int]:
    cpu = _tiered(node.vcpus * 1000, _CORE_TIERS)
    memory = 255 * MIB if node.memory_bytes < GIB else _tiered(node.memory_bytes, _GKE_MEMORY_TIERS)
    return int(cpu), int(memory) + EVICTION_HARD


def eks_reserved(node: Node) -> tuple[int, int]:
    """awslabs/amazon-eks-ami nodeadm/internal/kubelet/config.go: getCPUMillicoresToReserve
    (the same tiers as GKE's, in basis points 600/100/50/25) and getMemoryMebibytesToReserve
    (11 MiB per pod of the instance type's max pods, from eni-max-pods.txt, + 255 MiB), with
    evictionHard memory.available 100Mi."""
    cpu = _tiered(node.vcpus * 1000, _CORE_TIERS)
    return int(cpu), (11 * node.max_pods + 255) * MIB + EVICTION_HARD


# Azure Kubernetes Service, "Node resource reservations": kube-reserved CPU by core count.
_AKS_CPU_MILLI = {1: 60, 2: 100, 4: 140, 8: 180, 16: 260, 32: 420, 64: 740}


def aks_reserved(node: Node) -> tuple[int, int]:
    """AKS 1.29 and later: memory the lesser of 20 MB per max pod + 50 MB and 25 % of the
    memory, plus the 100 Mi eviction rule; CPU from the table, a core count between two rows
    taking the larger row."""
    cpu = next(milli for cores, milli in sorted(_AKS_CPU_MILLI.items()) if cores >= node.vcpus)
    memory = min(20 * MB * node.max_pods + 50 * MB, 0.25 * node.memory_bytes)
    return cpu, int(memory) + EVICTION_HARD


def kubelet_default_reserved(node: Node) -> tuple[int, int]:
    """A kubelet as it ships (kubeadm, on premises): no kube- or system-reserved, the
    100Mi eviction threshold (k8s.io/kubelet/config/v1beta1 KubeletConfiguration defaults)."""
    return 0, EVICTION_HARD


RESERVED = {
    "gke": gke_reserved,
    "eks": eks_reserved,
    "aks": aks_reserved,
    "generic": kubelet_default_reserved,
}


def room_for_a_pod(provider: str, node: Node) -> tuple[int, int]:
    """Millicores and bytes one more pod can request on the node: allocatable less the
    DaemonSets' budget."""
    cpu_reserved, memory_reserved = RESERVED[provider](node)
    cpu = node.vcpus * 1000 - cpu_reserved - DAEMONSETS_CPU_MILLI
    return cpu, node.capacity_memory - memory_reserved - DAEMONSETS_MEMORY


# The usual single-GPU nodes of each provider (vCPUs and memory as listed; EKS max pods
# from amazon-eks-ami's eni-max-pods.txt; AKS's Azure CNI Overlay default of 250 pods, the
# largest reservation).
COMMON_GPU_NODES = {
    "gke": [
        Node("g2-standard-4 (1x L4)", 4, 16 * GIB),
        Node("n1-standard-4 + 1x T4", 4, 15 * GIB),
        Node("g2-standard-8 (1x L4)", 8, 32 * GIB),
        Node("a2-highgpu-1g (1x A100)", 12, 85 * GIB),
    ],
    "eks": [
        Node("g4dn.xlarge (1x T4)", 4, 16 * GIB, max_pods=29),
        Node("g5.xlarge (1x A10G)", 4, 16 * GIB, max_pods=58),
        Node("g6.xlarge (1x L4)", 4, 16 * GIB, max_pods=58),
        Node("g4dn.2xlarge (1x T4)", 8, 32 * GIB, max_pods=29),
        Node("g5.2xlarge (1x A10G)", 8, 32 * GIB, max_pods=58),
    ],
    "aks": [
        Node("Standard_NC4as_T4_v3", 4, 28 * GIB, max_pods=250),
        Node("Standard_NC8as_T4_v3", 8, 56 * GIB, max_pods=250),
        Node("Standard_NC6s_v3 (1x V100)", 6, 112 * GIB, max_pods=250),
        Node("Standard_NC24ads_A100_v4", 24, 220 * GIB, max_pods=250),
    ],
    "generic": [Node("4 vCPU, 16 GiB, one GPU", 4, 16 * GIB)],
}
