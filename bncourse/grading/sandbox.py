"""The sandbox each submission's kernel runs in: bubblewrap (``bwrap``), resource limits, a scrubbed environment.

Inside the sandbox the kernel sees (see :func:`bwrap_command`):

* ``/usr`` (and the ``/bin``, ``/lib*`` links), the Python installation, the virtual environment and its
  installed packages, and the ``bncourse`` package directory, all **read-only**; with an editable install
  only the package directory is mounted, never the repository around it (``solutions/``);
* ``/grader-in`` read-only: the kernel's connection file and the grading inputs the grader wrote;
* ``/tmp``: a private, size-limited tmpfs (the working directory ``/tmp/work``, ``HOME``, the kernel's
  IPC sockets in ``/tmp/.kernel`` and the results in ``/tmp/.grader``), gone when the kernel stops;
* a private ``/proc`` (its own PID namespace: no other process is visible) and a minimal ``/dev``;
* nothing else: no home directory, no submissions, no solutions, no output folder, no network
  (its own, empty network namespace), no IPC or hostname shared with the host. Everything outside ``/tmp``
  is read-only, the sandbox's own root included (``--remount-ro /``).

The grader talks to the kernel over ZeroMQ's IPC transport: the kernel binds Unix sockets in its own
tmpfs and the grader connects to them through ``/proc/<sandbox pid>/root``, so the kernel never needs a
writable directory on the host's disk. Results are read back the same way, one path component at a
time without following symbolic links (:meth:`SandboxedFiles.read`), and size-capped before parsing.

Limits (:class:`Limits`) are set by ``_launcher.py`` inside the sandbox: address space (memory),
processes and threads, file size, CPU time, open files, no core dumps. When the grader runs as root,
bubblewrap runs without a user namespace and the launcher drops to an unprivileged user id of its own
(one per kernel, so the process limit of one sandbox does not count another's processes).
"""
from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import site
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

INBOX = "/grader-in"          # read-only inside: connection file, grading inputs
SCRATCH = "/tmp"              # private tmpfs inside
WORKDIR = "/tmp/work"         # the kernel's working directory and HOME
KERNEL_DIR = "/tmp/.kernel"   # the kernel's IPC sockets
OUTBOX = "/tmp/.grader"       # the results the kernel writes for the grader

INSTALL_HINT = ("bubblewrap is needed to grade untrusted notebooks safely: install it with "
                "`sudo apt-get install bubblewrap` (Debian/Ubuntu), `sudo dnf install bubblewrap` (Fedora) or "
                "`conda install -c conda-forge bubblewrap`; unprivileged use needs user namespaces "
                "(`sysctl kernel.unprivileged_userns_clone=1` on some kernels). To grade without a sandbox "
                "anyway (only inside a throwaway container such as Gradescope's), pass --no-sandbox.")


@dataclass(frozen=True)
class Limits:
    """Per-kernel resource limits (``setrlimit`` inside the sandbox, plus the size of its tmpfs)."""
    memory_bytes: int = 4 << 30       # RLIMIT_AS: a larger allocation raises MemoryError
    processes: int = 64               # RLIMIT_NPROC: processes and threads (a fork bomb stops here)
    file_bytes: int = 256 << 20       # RLIMIT_FSIZE: largest file the kernel may write
    scratch_bytes: int = 512 << 20    # size of the private /tmp (a disk-filling loop stops here)
    cpu_seconds: int = 900            # RLIMIT_CPU: CPU time of the kernel process
    open_files: int = 512             # RLIMIT_NOFILE

    def rlimits(self) -> dict[str, int]:
        return {"AS": self.memory_bytes, "NPROC": self.processes, "FSIZE": self.file_bytes,
                "CPU": self.cpu_seconds, "NOFILE": self.open_files, "CORE": 0}


# Environment variables the kernel gets (nothing else of the grader's environment crosses).
KERNEL_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": WORKDIR, "USER": "student", "LOGNAME": "student", "TMPDIR": SCRATCH,
    "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{WORKDIR}/.matplotlib",
    "IPYTHONDIR": f"{WORKDIR}/.ipython", "JUPYTER_CONFIG_DIR": f"{WORKDIR}/.jupyter",
    "JUPYTER_DATA_DIR": f"{WORKDIR}/.jupyter-data", "JUPYTER_RUNTIME_DIR": f"{WORKDIR}/.jupyter-runtime",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1", "BNCOURSE_DEVICE": "cpu",
}
# Copied from the grader's environment when set (values that change numerics, never secrets or paths).
KERNEL_ENV_PASSTHROUGH = ("ATEN_CPU_CAPABILITY", "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE",
                          "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "TZ")


def kernel_env(extra_path: str | None = None, workdir: str | None = None) -> dict[str, str]:
    """The allow-listed environment of a kernel: ``KERNEL_ENV``, the numerics variables of
    ``KERNEL_ENV_PASSTHROUGH`` when set, and (unsandboxed) the kernel's own working directory."""
    env = dict(KERNEL_ENV)
    if workdir is not None:   # unsandboxed: the paths of the kernel's host directory instead of the sandbox's
        env = {k: v.replace(WORKDIR, workdir) for k, v in env.items()}
        env["TMPDIR"] = workdir
    env.update({k: os.environ[k] for k in KERNEL_ENV_PASSTHROUGH if k in os.environ})
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    if extra_path:
        env["PYTHONPATH"] = extra_path
    return env


def package_dir() -> Path:
    """The directory of the ``bncourse`` package (for an editable install: inside the repository)."""
    import bncourse

    return Path(next(iter(bncourse.__path__))).resolve()


def _python_dirs() -> list[Path]:
    """Directories the kernel's Python needs, read-only: installation, environment, site-packages, bncourse."""
    dirs = [sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix, *site.getsitepackages(),
            package_dir()]
    out: list[Path] = []
    for d in dirs:
        p = Path(d).resolve()
        if p.is_dir() and p != Path("/") and p not in out:
            out.append(p)
    # drop a directory already inside another one, and never mount a directory that holds the package's
    # repository (e.g. a venv created at the repository root): only the package itself
    out = [p for p in out if not any(q != p and p.is_relative_to(q) for q in out)]
    repo = package_dir().parent
    if (repo / "solutions").exists() and any(repo.is_relative_to(p) for p in out):
        raise RuntimeError(f"the Python environment contains the repository {repo}: the sandbox would expose "
                           f"its solutions; install bncourse in a virtual environment outside it")
    return out


def _system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            args += ["--ro-bind", str(p), str(p)]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/fonts",
              "/etc/alternatives"):
        args += ["--ro-bind-try", f, f]
    return args


def _parents(paths: list[Path]) -> list[str]:
    """``--dir`` for every ancestor of the mount points, world-traversable (bubblewrap makes them 0700 as root)."""
    seen: list[str] = []
    for p in paths:
        for a in reversed(p.parents):
            s = str(a)
            if s not in ("/", SCRATCH) and s not in seen and not s.startswith("/usr"):
                seen.append(s)
    args: list[str] = []
    for s in seen:
        args += ["--perms", "0755", "--dir", s]
    return args


def namespace_args() -> list[str]:
    if os.geteuid() == 0:      # privileged bubblewrap: no user namespace; the launcher drops to a plain uid
        return ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    return ["--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try"]


def bwrap_command(inbox: Path, command: list[str], env: dict[str, str], limits: Limits,
                  uid: int | None = None) -> list[str]:
    """The full ``bwrap ... -- python _launcher.py ... -- command`` line for one kernel."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise RuntimeError(INSTALL_HINT)
    pydirs = _python_dirs()
    args = [bwrap, *namespace_args(), "--die-with-parent", "--new-session", "--hostname", "sandbox",
            "--clearenv"]
    for k, v in env.items():
        args += ["--setenv", k, v]
    args += _system_mounts()
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(limits.scratch_bytes), "--tmpfs", SCRATCH]
    for d in (WORKDIR, KERNEL_DIR, OUTBOX):
        args += ["--perms", "0777", "--dir", d]
    args += _parents([*pydirs, Path(INBOX)])      # after the tmpfs, so an environment under /tmp still shows
    for d in pydirs:
        args += ["--ro-bind", str(d), str(d)]
    args += ["--ro-bind", str(inbox), INBOX]
    # The sandbox's root is a tmpfs that bubblewrap builds; run unprivileged, the kernel's user owns it, so a
    # submission could write files there (into memory, past the size-limited /tmp). Read-only after set-up.
    args += ["--remount-ro", "/", "--chdir", WORKDIR]
    if uid is None:
        uid = secrets.randbelow(1_000_000_000) + 1_000_000 if os.geteuid() == 0 else 0
    launcher = str(Path(__file__).with_name("_launcher.py").resolve())
    python = sys.executable
    args += ["--", python, "-I", "-S", launcher, json.dumps(limits.rlimits()), str(uid), "--", *command]
    return args


@functools.lru_cache(maxsize=None)
def unavailable_reason() -> str | None:
    """None when a bubblewrap sandbox can be started here, else why not (with how to install it)."""
    if not sys.platform.startswith("linux"):
        return f"the sandbox needs Linux (this is {sys.platform}). {INSTALL_HINT}"
    if shutil.which("bwrap") is None:
        return f"bwrap (bubblewrap) is not installed. {INSTALL_HINT}"
    version = bwrap_version()
    if version is not None and version < (0, 8):
        return (f"bubblewrap {'.'.join(map(str, version))} is too old: 0.8 or newer is needed (--size, --perms "
                f"for directories, --disable-userns). {INSTALL_HINT}")
    with _tempdir() as inbox:
        try:
            cmd = bwrap_command(Path(inbox), [sys.executable, "-I", "-S", "-c", "pass"], kernel_env(), Limits())
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
            return f"bwrap could not be started ({e}). {INSTALL_HINT}"
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return f"bwrap could not create a sandbox ({why}); are user namespaces disabled? {INSTALL_HINT}"
    return None


def bwrap_version() -> tuple[int, ...] | None:
    """``bwrap --version`` as a tuple, e.g. (0, 8, 0); None if it cannot be read."""
    import re

    try:
        out = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(x) for x in m.groups() if x is not None) if m else None


class _tempdir:
    def __enter__(self) -> str:
        import tempfile

        self.path = tempfile.mkdtemp(prefix="bncourse-probe-")
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Reading what the kernel wrote, without following its symbolic links
# --------------------------------------------------------------------------------------------
class ResultTooLarge(Exception):
    pass


def read_beneath(root_fd: int, relpath: str, cap: int) -> bytes:
    """Bytes of the regular file ``relpath`` under the directory ``root_fd``: no component may be a symbolic
    link, the file must be a regular file, at most ``cap`` bytes (else ResultTooLarge)."""
    parts = [p for p in relpath.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"bad relative path {relpath!r}")
    fds = []
    try:
        fd = root_fd
        for p in parts[:-1]:
            fd = os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            fds.append(fd)
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        fds.append(fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{relpath} is not a regular file")
        if st.st_size > cap:
            raise ResultTooLarge(f"{relpath} is {st.st_size} bytes, more than the {cap} accepted")
        chunks, left = [], cap + 1
        while left > 0:
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        data = b"".join(chunks)
        if len(data) > cap:
            raise ResultTooLarge(f"{relpath} is more than the {cap} bytes accepted")
        return data
    finally:
        for f in fds:
            os.close(f)


# --------------------------------------------------------------------------------------------
# The kernel manager
# --------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


class SandboxKernelManager(AsyncKernelManager):
    """Starts the kernel inside bubblewrap; connects to its IPC sockets through ``/proc/<pid>/root``.

    Set ``sandbox_inbox`` (host directory mounted read-only at ``/grader-in``), ``sandbox_env`` and
    ``sandbox_limits`` before ``start_kernel``.
    """
    sandbox_inbox: Path
    sandbox_env: dict
    sandbox_limits: Limits
    sandbox_pid: int | None = None      # the sandbox's PID 1 (bubblewrap's init) in the host's PID namespace

    def setup_sandbox(self, inbox: Path, env: dict, limits: Limits) -> None:
        self.sandbox_inbox, self.sandbox_env, self.sandbox_limits = Path(inbox), env, limits
        self.transport = "ipc"
        self.ip = f"{KERNEL_DIR}/k"
        self.connection_file = str(Path(inbox) / f"kernel-{secrets.token_hex(4)}.json")

    _args_fd: int | None = None

    def format_kernel_cmd(self, extra_arguments=None) -> list[str]:
        """``bwrap --args FD -- COMMAND``: the options travel through a pipe, so the sandbox's PID 1 (whose
        command line the kernel can read) does not show the host paths mounted, such as the grader's
        temporary directory."""
        inner = [sys.executable, "-m", "ipykernel_launcher", "-f",
                 f"{INBOX}/{Path(self.connection_file).name}", *(extra_arguments or [])]
        cmd = bwrap_command(self.sandbox_inbox, inner, self.sandbox_env, self.sandbox_limits)
        sep = cmd.index("--")               # the options go through the pipe; the command stays (paths it
        data = b"".join(a.encode() + b"\0" for a in cmd[1:sep])   # names are visible inside anyway)
        if len(data) > 60_000:       # more than a pipe holds without a reader: keep them on the command line
            return cmd
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        self._args_fd = r
        return [cmd[0], "--args", str(r), *cmd[sep:]]

    def write_connection_file(self, **kwargs) -> None:
        super().write_connection_file(**kwargs)
        os.chmod(self.connection_file, 0o644)   # readable by the kernel's user; its folder is the grader's (0700)

    async def _async_launch_kernel(self, kernel_cmd, **kw) -> None:
        kw["env"] = {"PATH": "/usr/bin:/bin"}     # bubblewrap's own environment (the kernel's is set by --setenv)
        if self._args_fd is not None:
            kw["pass_fds"] = (self._args_fd,)
        try:
            await super()._async_launch_kernel(kernel_cmd, **kw)
        finally:
            if self._args_fd is not None:
                os.close(self._args_fd)
                self._args_fd = None
        outer = self.provisioner.process.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            inits = _children(outer)
            if inits and _children(inits[0]):   # the command started: the sandbox's mounts are in place
                self.sandbox_pid = inits[0]
                break
            if self.provisioner.process.poll() is not None:
                break
            time.sleep(0.01)
        if self.sandbox_pid is None:
            raise RuntimeError("the sandbox did not start (bwrap exited or timed out)")
        self.ip = f"/proc/{self.sandbox_pid}/root{KERNEL_DIR}/k"

    def kill_strays(self) -> int:
        """SIGKILL every process of the sandbox except its init and the kernel (what a cell left running:
        forked children, a fork bomb's survivors, background jobs). Returns how many were killed."""
        import signal

        init = self.sandbox_pid
        if init is None:
            return 0
        killed = 0
        for _ in range(20):
            kernel = _children(init)[:1]
            strays, todo = [], [init]
            while todo:
                pid = todo.pop()
                for c in _children(pid):
                    if c not in kernel:
                        strays.append(c)
                    todo.append(c)
            if not strays:
                break
            for pid in strays:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
            time.sleep(0.01)
        return killed

    def cleanup_ipc_files(self) -> None:
        pass     # the sockets live in the sandbox's tmpfs, which disappears with it

    def root_fd(self) -> int:
        """An O_PATH descriptor of the sandbox's root directory, checked to still belong to this sandbox."""
        pid = self.sandbox_pid
        if pid is None or pid not in _children(self.provisioner.process.pid):
            raise OSError("the sandbox is not running")
        return os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY)
