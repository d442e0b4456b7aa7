"""pytest configuration shared by unit tests and nbval.

Environment variables set here reach the notebook kernels nbval starts, so every notebook runs
exactly as its stored outputs were produced: hash seed fixed (set iteration order), CPU device
(stored outputs are CPU results; run by hand on a GPU machine, the chapters use CUDA).
"""
import os
import signal

# A runner that starts the suite in the background (`cmd &` in a non-interactive shell, as many CI runners do)
# hands every process SIGINT ignored, and Python then leaves it ignored. Ctrl-C's default handler back, so the
# tests of code that is interrupted (check's time limit, the distributed launcher) run as they do in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ["PYTHONHASHSEED"] = "0"
os.environ.setdefault("BNCOURSE_DEVICE", "cpu")

# On a fresh machine matplotlib builds its font cache on first import and says so on stderr.
# Build it here, in the pytest process, so no notebook kernel prints that line.
import matplotlib.font_manager  # noqa: E402,F401
