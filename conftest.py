"""pytest configuration shared by unit tests and nbval.

Environment variables set here reach the notebook kernels nbval starts, so every notebook runs
exactly as its stored outputs were produced: hash seed fixed (set iteration order), CPU device
(stored outputs are CPU results; run by hand on a GPU machine, the chapters use CUDA).
"""
import os

os.environ["PYTHONHASHSEED"] = "0"
os.environ.setdefault("BNCOURSE_DEVICE", "cpu")

# On a fresh machine matplotlib builds its font cache on first import and says so on stderr.
# Build it here, in the pytest process, so no notebook kernel prints that line.
import matplotlib.font_manager  # noqa: E402,F401
