"""Suite-wide guards.

The notebook kernels nbval starts (``--nbval-current-env``) inherit the environment of the pytest worker that
starts them, and one worker runs unit tests and notebooks in turn (``--dist loadfile``). A test that leaves a
variable behind therefore changes notebooks that run after it, in an order that depends on timing: an
``MPLBACKEND=Agg`` left by one test once dropped a chapter's figure in CI only. So every test must leave
``os.environ`` as it found it (``monkeypatch.setenv`` does).
"""
import os
import signal

import pytest

# set by the tools themselves, not by a test: pytest around every phase; PyTorch's compiler records its cache
# folder (a path under the temp dir) the first time it compiles in a process; scikit-learn sets the two OpenMP
# switches when it is first imported (and does the same in every kernel that imports it)
_SET_BY_TOOLS = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR", "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK"}


@pytest.fixture(autouse=True)
def _environment_is_restored(request):
    before = {k: v for k, v in os.environ.items() if k not in _SET_BY_TOOLS}
    yield
    after = {k: v for k, v in os.environ.items() if k not in _SET_BY_TOOLS}
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        for k in changed:                            # repair it, so one leak fails one test, not the ones after it
            if k in before:
                os.environ[k] = before[k]
            else:
                del os.environ[k]
        pytest.fail(f"{request.node.nodeid} left os.environ changed: {changed}; use monkeypatch.setenv or restore "
                    "it (notebook kernels started later in this worker inherit the environment)", pytrace=False)


@pytest.fixture(autouse=True)
def _sigint_handler_is_restored(request):
    """A test must leave Ctrl-C's handler as it found it: ``check``'s time limit off the SIGALRM path interrupts
    the main thread with a simulated SIGINT, which a leftover handler swallows (a later test then spins forever)."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)         # repair it, so one leak fails one test, not the ones after it
        pytest.fail(f"{request.node.nodeid} left the SIGINT handler changed: {before!r} -> {after!r}", pytrace=False)
