"""The suite's own set-up: parallel workers share the cores instead of each taking them all."""

import os

import torch


def test_each_worker_and_the_processes_it_starts_take_their_share_of_the_cores():
    # Oversubscribed OpenMP pools spin-wait: three workers of two threads each on two cores
    # cost the suite a third of its CPU time (tests/conftest.py).
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cores = len(os.sched_getaffinity(0))
    assert torch.get_num_threads() * workers <= max(cores, workers)
    assert os.environ["OMP_NUM_THREADS"] == str(torch.get_num_threads())  # what subprocesses inherit
