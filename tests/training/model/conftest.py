import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run these small-tensor tests on one intra-op thread.

    At 64x64 a second thread buys nothing, and on a shared 2-core machine OpenMP's
    spin-waiting between two threads made a step 20-70x slower when other processes
    held the cores.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
