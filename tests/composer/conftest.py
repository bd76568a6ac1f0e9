import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models: extra threads only add synchronisation, and on a busy machine a lot of it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
