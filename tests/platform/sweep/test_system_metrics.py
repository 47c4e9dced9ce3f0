"""System metrics a trial reports with each epoch (measured in the trial's process by psutil)."""

from __future__ import annotations

import time

from leoclr_platform.sweep.system_metrics import SystemSampler, with_system_metrics


def test_a_sample_measures_cpu_and_memory_of_the_machine_and_the_process():
    sampler = SystemSampler(device=None)
    end = time.process_time() + 0.3
    while time.process_time() < end:  # keep one core busy
        pass
    sample = sampler.sample()
    assert set(sample) == {"system/cpu_percent", "system/process_cpu_percent", "system/memory_rss_mb",
                           "system/memory_used_percent"}  # no GPU keys on the CPU
    assert sample["system/process_cpu_percent"] > 20.0  # busy since the sampler started
    assert 0.0 < sample["system/cpu_percent"] <= 100.0 and 0.0 < sample["system/memory_used_percent"] < 100.0
    assert sample["system/memory_rss_mb"] > 10.0
    assert with_system_metrics({"loss": 1.0}, None) == {"loss": 1.0}
    assert with_system_metrics({"loss": 1.0}, sampler)["loss"] == 1.0
