"""What a trial's machine is doing, measured in the trial's process and reported with each epoch.

The driver is the only MLflow writer, so a trial does not log system metrics itself (MLflow's
own monitor would write from every trial process): `SystemSampler` reads psutil (and torch's
CUDA counters when the trial uses a GPU) and `sweep/trial.py` adds the values to the epoch's
report as `system/*` keys, which the tracker logs like the other metrics (switch off with
`leoclr sweep --no-system-metrics`).

  system/cpu_percent             the machine's CPU use since the previous sample (all cores = 100)
  system/process_cpu_percent     this trial process's CPU use since the previous sample (1 core = 100)
  system/memory_rss_mb           the trial process's resident memory
  system/memory_used_percent     the machine's memory in use
  system/gpu_memory_mb           peak GPU memory torch allocated since the previous sample
  system/gpu_utilization_percent the GPU's utilisation (where NVML answers)
"""

from __future__ import annotations

from typing import Any


class SystemSampler:
    """Samples since the previous call (the first call: since construction)."""

    def __init__(self, device: Any = None):
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._device = device
        psutil.cpu_percent(interval=None)  # start both CPU counters now
        self._process.cpu_percent(interval=None)

    def sample(self) -> dict[str, float]:
        psutil = self._psutil
        out = {
            "system/cpu_percent": float(psutil.cpu_percent(interval=None)),
            "system/process_cpu_percent": float(self._process.cpu_percent(interval=None)),
            "system/memory_rss_mb": self._process.memory_info().rss / 2**20,
            "system/memory_used_percent": float(psutil.virtual_memory().percent),
        }
        out.update(self._gpu())
        return out

    def _gpu(self) -> dict[str, float]:
        device = self._device
        if device is None or getattr(device, "type", str(device)) != "cuda":
            return {}
        import torch

        out = {"system/gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20}
        torch.cuda.reset_peak_memory_stats(device)
        try:
            out["system/gpu_utilization_percent"] = float(torch.cuda.utilization(device))
        except Exception:  # noqa: BLE001 - NVML missing or not answering: memory only
            pass
        return out


def with_system_metrics(metrics: dict[str, Any], sampler: SystemSampler | None) -> dict[str, Any]:
    """The report's metrics plus the system/* sample (unchanged without a sampler)."""
    return {**metrics, **sampler.sample()} if sampler is not None else metrics
