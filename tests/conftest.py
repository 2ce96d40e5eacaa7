import pytest, torch

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")

def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"): return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords: item.add_marker(skip)

@pytest.fixture(autouse=True)
def _few_threads():
    # the machines that run CI have 2 cores; keep torch from oversubscribing them
    torch.set_num_threads(2)
