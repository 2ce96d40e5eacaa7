import pytest, torch

@pytest.fixture(autouse=True)
def _few_threads():
    # the machines that run CI have 2 cores; keep torch from oversubscribing them
    torch.set_num_threads(2)
