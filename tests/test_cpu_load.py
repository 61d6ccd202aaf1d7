"""The busy-CPU warning the train and eval commands print before a CPU job shares its cores."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch

from stateset_agents.commands import cpu_load
from stateset_agents.commands.cpu_load import busy_cores, busy_cpu_warning, warn_if_cpu_busy


def test_a_second_job_on_two_cores_is_warned_about():
    warning = busy_cpu_warning(threads=2, busy=1.9, cores=2)
    assert warning is not None and "1.9 of 2 cores in use" in warning and "OMP_NUM_THREADS=1" in warning


def test_an_idle_machine_or_a_single_thread_gets_no_warning():
    assert busy_cpu_warning(threads=2, busy=0.1, cores=2) is None
    assert busy_cpu_warning(threads=1, busy=2.0, cores=2) is None  # one thread time-shares; it does not spin-wait
    assert busy_cpu_warning(threads=8, busy=4.0, cores=16) is None
    assert busy_cpu_warning(threads=2, busy=None, cores=2) is None  # no /proc/stat: nothing to say


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.skipif(not cpu_load.PROC_STAT.exists(), reason="needs Linux's /proc/stat")
def test_busy_cores_sees_a_process_that_spins():
    spinner = multiprocessing.get_context("spawn").Process(target=_spin, args=(6.0,))
    spinner.start()
    try:
        time.sleep(1.0)  # let it start
        assert busy_cores(0.5) >= 0.7
    finally:
        spinner.terminate()
        spinner.join()


def test_the_warning_uses_the_sampled_load(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        said = []
        monkeypatch.setattr(cpu_load, "busy_cores", lambda: float(os.cpu_count() or 1))
        warn_if_cpu_busy("cpu", said.append)
        assert len(said) == 1 and said[0].startswith("warning: the CPU is busy")
        said.clear()
        if not torch.cuda.is_available():
            warn_if_cpu_busy("cuda", said.append)
            assert said == []  # the model loader refuses that device; no warning on top
        monkeypatch.setattr(cpu_load, "busy_cores", lambda: 0.0)
        warn_if_cpu_busy("cpu", said.append)
        assert said == [] or (os.cpu_count() or 1) < 2
    finally:
        torch.set_num_threads(before)
