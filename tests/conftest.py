import pytest, torch
from fake_accelerator import FAKE, FakeAccelerator
from robustlearn.core import get_device

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")
    parser.addoption("--device", default="cpu", metavar="DEVICE",
                     help="where tests/test_device.py runs the chapters: cpu (default), cuda, cuda:N, mps, "
                          "or fake (CPU tensors posing as an accelerator, see tests/fake_accelerator.py)")

def pytest_configure(config):
    name = config.getoption("--device")
    if name != "fake":
        try: get_device(name)
        except (TypeError, ValueError) as e: raise pytest.UsageError(f"--device {name}: {e}")

def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"): return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords: item.add_marker(skip)

@pytest.fixture(autouse=True)
def _few_threads():
    # the machines that run CI have 2 cores; keep torch from oversubscribing them
    torch.set_num_threads(2)

@pytest.fixture
def device(request):
    "The device given by --device (the fake accelerator is active during the test when it is 'fake')."
    name = request.config.getoption("--device")
    if name == "fake":
        with FakeAccelerator(): yield FAKE
    else:
        yield get_device(name)

@pytest.fixture
def fake():
    "The fake accelerator, whatever --device says: for the faults that only a GPU would show."
    with FakeAccelerator(): yield FAKE
