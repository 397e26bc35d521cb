"""FAISS state shared by matching and retrieval: the one GPU resource holder, GPU index
transfer and a one-thread context for many tiny searches.

``localize.match_features`` (top-2 neighbours of local descriptors) and ``localize.retrieve``
(vocabularies, global-descriptor search) both go through this module, so a process holds at
most one ``faiss.StandardGpuResources`` (its temporary GPU memory is allocated once).
"""

from __future__ import annotations

from typing import Any

import faiss
import torch

_GPU_RESOURCES: list[Any] = []  # at most one faiss.StandardGpuResources, made on first use


def gpu_available() -> bool:
    """True when FAISS was built with GPU support and sees a GPU (``faiss-cpu``: 0 GPUs)."""
    return faiss.get_num_gpus() > 0


def want_gpu(device: str | torch.device | None) -> bool:
    """Run FAISS on the GPU for a torch ``device`` (None = GPU iff FAISS sees one; a CUDA
    device only when FAISS was built with GPU support, else FAISS stays on the CPU)."""
    return gpu_available() and (device is None or torch.device(device).type == "cuda")


def gpu_resources() -> Any:
    """The process's one ``faiss.StandardGpuResources`` (created on the first call)."""
    if not _GPU_RESOURCES:
        _GPU_RESOURCES.append(faiss.StandardGpuResources())
    return _GPU_RESOURCES[0]


def index_to_gpu(index: Any, device: int = 0) -> Any:
    """Copy a CPU FAISS index to GPU ``device`` with the shared resources."""
    return faiss.index_cpu_to_gpu(gpu_resources(), device, index)


class single_thread:
    """Context: FAISS's OpenMP pool limited to one thread, restored afterwards.

    Per-image encoding / matching works on tiny matrices; on a shared machine a multi-thread
    pool spinning for each of them is far slower than one thread."""

    def __enter__(self) -> "single_thread":
        self._threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        return self

    def __exit__(self, *exc: Any) -> None:
        faiss.omp_set_num_threads(self._threads)
