"""``bncourse grade`` against hostile submissions, in the real bubblewrap sandbox.

One grading run (the real command line, two parallel jobs) grades a class of hostile notebooks that know
every path on the grader's machine (the test writes them into their code) and try to:

* read the solutions (the copy being graded against and the repository's ``solutions/``), the other
  submissions or any notebook at all, and earn points with what they read;
* find the grader's process, its command line, working directory or environment through ``/proc``;
* write to a classmate's submission, the solutions, the output folder;
* open a network connection (to a server this test listens on, and to the outside);
* fork-bomb, allocate far more memory than the machine has, fill the disk, leave processes running
  after the cell printed;
* return an enormous result, a zip bomb, an enormous status, or symbolic links instead of results.

Each hostile cell ends by raising ``RuntimeError(<json of what it saw>)``; the grader reports the first
line in the row's notes, which is how the tests below learn what the sandbox let the cell do.
Afterwards every file outside the sandboxes is byte-for-byte unchanged and every submission has a row.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pytest

from bncourse.grading import sandbox
from bncourse.grading.core import load_source

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "03_batchnorm_from_scratch_exercises.ipynb"
EXERCISE = ROOT / "exercises" / "03_batchnorm_from_scratch_exercises.ipynb"
NAME = SOLUTION.name
FULL = {e.name: e.points for e in load_source(SOLUTION).exercises}     # the solution's points, per exercise
ZERO = dict.fromkeys(FULL, 0.0)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sandbox.unavailable_reason() is not None,
                                 reason=f"no bubblewrap sandbox here: {sandbox.unavailable_reason()}")]

# Code every hostile cell starts with: try things, record short outcome codes, raise them at the end.
PRELUDE = '''
import json as _json, os as _os
_seen = {}
def _try(key, fn):
    try:
        r = fn()
        _seen[key] = "OK" if r is None else r
    except BaseException as e:
        _seen[key] = type(e).__name__[:6]
'''
REPORT = "\nraise RuntimeError(_json.dumps(_seen, separators=(',', ':')))\n"

SPY = '''
def _all_notebooks():     # every notebook outside the installed packages and the system
    found = []
    for d, dirs, files in _os.walk("/"):
        dirs[:] = [x for x in dirs if not (d == "/" and x in ("proc", "sys", "dev", "usr"))
                   and x not in ("site-packages", "lib")]
        found += [_os.path.join(d, f) for f in files if f.endswith(".ipynb")]
    return found
_nbs = _all_notebooks()
_seen["nbs"] = len(_nbs)
def _steal(path):
    nb = _json.load(open(path))
    code = "\\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    exec(code, globals())       # the solution cells, with their solutions: full marks if this works
    return "STOLEN"
for _i, _p in enumerate([*_nbs, SOL_COPY, REPO_SOL, VICTIM]):
    _try(f"r{_i}", lambda: _steal(_p))
_try("subdir", lambda: str(len(_os.listdir(SUBMISSIONS))))
_try("repo", lambda: ",".join(sorted(_os.listdir(REPO))))
_try("bncourse_only", lambda: "solutions" not in _os.listdir(_os.path.dirname(_os.path.dirname(
    __import__("bncourse").__file__))) or "EXPOSED")
_pids = [p for p in _os.listdir("/proc") if p.isdigit()]
_seen["pids"] = len(_pids)
_cmds = " ".join(open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace") for p in _pids)
_seen["cmd_leak"] = sum(x in _cmds for x in (SUBMISSIONS, OUT, SOL_DIR, "pytest", "bncourse-grade-", "--bind"))
_try("ppid", lambda: str(_os.getppid()))
_try("cwd1", lambda: _os.readlink("/proc/1/cwd"))
_seen["env"] = [k for k, v in _os.environ.items() if "CANARY" in k or "canary" in v or k.startswith("PYTEST")]
_seen["home"] = _os.environ.get("HOME")
import socket as _socket
_try("net_local", lambda: _socket.create_connection(("127.0.0.1", PORT), timeout=2).close())
_try("net_out", lambda: _socket.create_connection(("1.1.1.1", 80), timeout=2).close())
_try("dns", lambda: _socket.getaddrinfo("example.com", 80) and "RESOLVED")
'''

VANDAL = '''
def _append(path):
    with open(path, "ab") as f:
        f.write(b" ")
for _i, _p in enumerate([VICTIM, SOL_COPY, REPO_SOL, OUT + "/grades.csv", OUT + "/planted.txt"]):
    _try(f"w{_i}", lambda: _append(_p))
_try("rm", lambda: _os.remove(VICTIM))
_try("mkdir", lambda: _os.mkdir(SUBMISSIONS + "/planted"))
_try("venv", lambda: open(__import__("numpy").__file__, "a").write("#"))
_try("pkg", lambda: open(__import__("bncourse").__file__, "a").write("#"))
def _fill_one_file():
    with open("big.bin", "wb") as f:
        while True:
            f.write(b"x" * (1 << 20))
_try("bigfile", _fill_one_file)
def _fill_disk():
    i = 0
    while True:
        with open(f"fill{i}.bin", "wb") as f:
            f.write(b"y" * (64 << 20))
        i += 1
_try("fill", _fill_disk)
_try("tmp_write", lambda: open("/tmp/x", "w").write("x") and None)
_try("root_write", lambda: open("/x", "w").write("x"))
_try("home_write", lambda: open("/root/x", "w").write("x"))
'''

BOMB = '''
_try("huge", lambda: bytearray(24 << 30) and "ALLOCATED")
def _grow():
    blocks = []
    while True:
        blocks.append(bytearray(256 << 20))
_try("grow", _grow)
import time as _time
def _fork_bomb():
    me, t0, refused = _os.getpid(), _time.time(), 0
    while _time.time() - t0 < 12 and not refused:   # every process forks until refused (at most 12 s: on a
        try:                                         # loaded machine 64 forks of a torch process take seconds)
            _os.fork()
        except BlockingIOError:
            refused += 1
    if _os.getpid() != me:            # then the children wait until the grader kills them (spinning
        _time.sleep(10_000)           # children would only starve the machine until the cell's time limit)
    return "limited" if refused else "UNLIMITED"
_try("bomb", _fork_bomb)
'''

LINGER = '''
import subprocess as _sp, threading as _th
print("done")
_sp.Popen(["/bin/sh", "-c", "while :; do :; done"])      # a busy process that outlives the cell
if _os.fork() == 0:                                       # and a forked copy of the kernel, sleeping
    import time as _time
    _time.sleep(10_000)
'''

HUGE_RESULTS = '''
import bncourse.grading.kernel_side as _ks, numpy as _np, json as _js
_run = _ks.run_exercise
def _evil(get_fn, name, cases_npz, cases_json, out_npz, out_json, timeout):
    if name == "bn_forward":            # 64 MB of results, far more than the grader accepts
        _np.savez(out_npz, a=_np.zeros(8_000_000))
        _js.dump({"status": {"kind": None}, "meta": "[]"}, open(out_json, "w"))
    elif name == "bn_backward_staged":  # a zip bomb: 100 kB that expand to 100 MB
        _np.savez_compressed(out_npz, a=_np.zeros(100_000_000, dtype=_np.uint8))
        _js.dump({"status": {"kind": None}, "meta": "[]"}, open(out_json, "w"))
    elif name == "bn_backward":         # a 50 MB status
        _np.savez(out_npz)
        open(out_json, "w").write("[" * 50_000_000)
    else:                               # symbolic links to the grader's files instead of results
        _os.symlink(SOL_COPY, out_json)
        _os.symlink(VICTIM, out_npz)
_ks.run_exercise = _evil
'''


def _nb(path):
    return nbformat.read(str(path), as_version=4)


def _insert(nb, source, index=2):
    nb.cells.insert(index, nbformat.v4.new_code_cell(source))
    return nb


def _answer(nb, gid, source):
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade_id") == gid:
            c.source = source
            return nb
    raise KeyError(gid)


def _hash_tree(*dirs: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for d in dirs for p in sorted(d.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    from bncourse.cli import main

    base = tmp_path_factory.mktemp("course")
    sol_dir, sub_dir, out = base / "solutions", base / "submissions", base / "out"
    for d in (sol_dir, sub_dir, out):
        d.mkdir()
    (sol_dir / NAME).write_bytes(SOLUTION.read_bytes())
    (out / "planted.txt").write_text("an earlier run's file\n")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    consts = {"SOL_COPY": str(sol_dir / NAME), "SOL_DIR": str(sol_dir), "REPO_SOL": str(SOLUTION),
              "REPO": str(ROOT), "SUBMISSIONS": str(sub_dir), "VICTIM": str(sub_dir / "honest" / NAME),
              "OUT": str(out), "PORT": listener.getsockname()[1],
              "ALLOWED_ENV": sorted(set(sandbox.KERNEL_ENV) | set(sandbox.KERNEL_ENV_PASSTHROUGH) | {"PYTHONPATH"})}
    header = "".join(f"{k} = {v!r}\n" for k, v in consts.items()) + PRELUDE

    def hostile(body, base_nb=EXERCISE):
        return _insert(_nb(base_nb), header + body + REPORT)

    subs = {"honest": _nb(SOLUTION), "spy": hostile(SPY), "vandal": hostile(VANDAL),
            "bomb": hostile(BOMB, SOLUTION), "linger": _insert(_nb(SOLUTION), header + LINGER)}
    subs["huge_results"] = _insert(_nb(SOLUTION), header + HUGE_RESULTS)
    for name, nb in subs.items():
        (sub_dir / name).mkdir()
        nbformat.write(nb, str(sub_dir / name / NAME))

    before = _hash_tree(sol_dir, sub_dir, out)
    targets = [ROOT / "bncourse" / "__init__.py", Path(np.__file__)]      # the vandal appends to these
    targets_before = [p.read_bytes() for p in targets]
    os.environ["BNCOURSE_CANARY_TOKEN"] = "canary-secret"       # must not reach any kernel
    try:
        rc = main(["grade", str(sub_dir), "--solutions", str(sol_dir), "--out", str(out), "--jobs", "2",
                   "--cell-timeout", "15", "--exercise-timeout", "10", "--total-timeout", "150", "--no-progress",
                   "--seed", "7", "--memory-limit", "2"])
    finally:
        del os.environ["BNCOURSE_CANARY_TOKEN"]
    connections = 0
    try:
        while True:
            listener.accept()[0].close()
            connections += 1
    except (TimeoutError, OSError):
        pass
    listener.close()
    after = _hash_tree(sol_dir, sub_dir)
    rows = {r["student"]: r for r in json.loads((out / "details.json").read_text())}
    out_files = sorted(p.name for p in out.iterdir())
    left = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return {"rc": rc, "rows": rows, "before": before, "after": after, "connections": connections,
            "out": out, "out_files": out_files, "planted": (out / "planted.txt").read_text(),
            "repo_unchanged": targets_before == [p.read_bytes() for p in targets], "ps": left}


def _scores(row):
    return {e["name"]: e["points"] for e in row["exercises"]}


def _seen(row) -> dict:
    """What the hostile cell reported (the JSON of its RuntimeError, from the row's notes)."""
    for n in row["notes"]:
        if "raised RuntimeError: {" in n:
            return json.loads(n.split("raised RuntimeError: ", 1)[1])
    raise AssertionError(f"no report from the hostile cell in {row['notes']}")


def test_every_submission_has_a_row_and_no_grader_error(graded):
    assert graded["rc"] == 0
    assert set(graded["rows"]) == {"honest", "spy", "vandal", "bomb", "linger", "huge_results"}
    assert all(r["status"] == "graded" for r in graded["rows"].values()), graded["rows"]
    assert not any("WITHOUT a sandbox" in n for r in graded["rows"].values() for n in r["notes"])


def test_no_file_outside_the_sandboxes_changed(graded):
    sub_and_sol = {k: v for k, v in graded["before"].items() if "/out/" not in k}
    assert graded["after"] == sub_and_sol
    assert graded["planted"] == "an earlier run's file\n"
    assert set(graded["out_files"]) == {"details.json", "gradescope", "grades.csv", "planted.txt"}
    assert graded["repo_unchanged"]


def test_honest_classmate_still_gets_full_points(graded):
    assert _scores(graded["rows"]["honest"]) == FULL


def test_spy_sees_no_notebook_no_process_no_network(graded):
    row = graded["rows"]["spy"]
    assert _scores(row) == ZERO
    seen = _seen(row)
    assert seen["nbs"] == 0, seen                                  # no notebook anywhere on its file system
    assert not any(v == "STOLEN" for v in seen.values()), seen
    assert all(seen[f"r{i}"] == "FileNo" for i in range(3)), seen
    assert seen["subdir"] == "FileNo" and seen["bncourse_only"] is True, seen
    assert set(seen["repo"].split(",")) <= {".venv", "bncourse"}, seen     # the package, not the repository
    assert seen["pids"] <= 3 and seen["cmd_leak"] == 0, seen       # its own init and kernel (and ps) only
    assert seen["ppid"] == "1", seen
    assert seen["env"] == [] and seen["home"] == "/tmp/work", seen   # none of the grader's variables
    assert seen["net_local"] in ("OSErro", "Connec") and seen["net_out"] in ("OSErro", "Timeou"), seen
    assert seen["dns"] == "gaierr", seen
    assert graded["connections"] == 0


def test_vandal_writes_nothing_outside_its_scratch_and_the_disk_filler_stops(graded):
    row = graded["rows"]["vandal"]
    assert _scores(row) == ZERO
    seen = _seen(row)
    for key in ("w0", "w1", "w2", "w3", "w4", "rm", "mkdir"):
        assert seen[key] == "FileNo", seen                                 # none of these paths exists there
    assert seen["venv"] in ("OSErro", "Permis") and seen["pkg"] in ("OSErro", "Permis"), seen   # read-only
    assert seen["bigfile"] == "OSErro" and seen["fill"] == "OSErro", seen  # file size limit, full tmpfs
    # read-only root; /root is read-only where the Python lives under it, and absent otherwise (a non-root grader)
    assert seen["root_write"] in ("Permis", "OSErro") and seen["home_write"] in ("Permis", "OSErro", "FileNo"), seen


def test_fork_bomb_and_memory_hogs_end_as_errors_and_the_work_still_counts(graded):
    row = graded["rows"]["bomb"]
    assert _scores(row) == FULL
    seen = _seen(row)
    assert seen["bomb"] == "limited", seen
    assert seen["huge"] == "Memory" and seen["grow"] == "Memory", seen


def test_processes_left_running_are_killed(graded):
    row = graded["rows"]["linger"]
    assert _scores(row) == FULL
    assert "while :; do :; done" not in graded["ps"]


def test_enormous_results_zip_bombs_and_symlinks_earn_nothing(graded):
    row = graded["rows"]["huge_results"]
    assert _scores(row) == ZERO
    reasons = {e["name"]: e["reason"] for e in row["exercises"]}
    assert "too large" in reasons["bn_forward"], reasons
    assert "too large" in reasons["bn_backward_staged"], reasons
    assert "too large" in reasons["bn_backward"], reasons
    assert "no results came back" in reasons["bn_module"], reasons


# ----------------------------------------------------------------------------------------------
# Fast unit tests of the pieces (no kernel)
# ----------------------------------------------------------------------------------------------
def test_read_beneath_refuses_symlinks_specials_and_large_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ok").write_bytes(b"12345")
    (tmp_path / "secret").write_text("secret")
    os.symlink(tmp_path / "secret", tmp_path / "d" / "link")
    os.symlink(tmp_path / "d", tmp_path / "dirlink")
    os.mkfifo(tmp_path / "d" / "fifo")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        assert sandbox.read_beneath(fd, "d/ok", 5) == b"12345"
        with pytest.raises(sandbox.ResultTooLarge):
            sandbox.read_beneath(fd, "d/ok", 4)
        for bad in ("d/link", "dirlink/ok", "d/fifo"):
            with pytest.raises(OSError):
                sandbox.read_beneath(fd, bad, 100)
        with pytest.raises(ValueError):
            sandbox.read_beneath(fd, "d/../secret", 100)
    finally:
        os.close(fd)


def test_bwrap_command_mounts_the_package_not_the_repository(tmp_path):
    cmd = sandbox.bwrap_command(tmp_path, ["python"], sandbox.kernel_env(), sandbox.Limits())
    binds = [cmd[i + 1] for i, a in enumerate(cmd) if a in ("--bind", "--ro-bind")]
    assert str(ROOT / "bncourse") in binds and str(ROOT) not in binds
    assert not any(b.startswith(str(ROOT / "solutions")) for b in binds)
    assert "--bind" not in cmd                       # nothing of the host is writable
    assert "--unshare-net" in cmd and "--unshare-pid" in cmd and "--clearenv" in cmd


def test_kernel_env_is_allow_listed(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    env = sandbox.kernel_env()
    assert "AWS_SECRET_ACCESS_KEY" not in env and env["ATEN_CPU_CAPABILITY"] == "default"
    assert set(env) <= set(sandbox.KERNEL_ENV) | set(sandbox.KERNEL_ENV_PASSTHROUGH) | {"PYTHONPATH"}


def test_grade_refuses_without_bubblewrap(tmp_path, monkeypatch, capsys):
    from bncourse.cli import main

    sub = tmp_path / "s.ipynb"
    sub.write_text("{}")
    monkeypatch.setattr(sandbox, "unavailable_reason", lambda: f"bwrap is not installed. {sandbox.INSTALL_HINT}")
    assert main(["grade", str(sub), "--solutions", str(ROOT / "solutions"), "--no-progress",
                 "--out", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert "apt-get install bubblewrap" in err and "--no-sandbox" in err



def test_too_old_bubblewrap_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(sandbox, "bwrap_version", lambda: (0, 6, 1))
    sandbox.unavailable_reason.cache_clear()
    try:
        why = sandbox.unavailable_reason()
    finally:
        sandbox.unavailable_reason.cache_clear()
    assert why is not None and "0.6.1 is too old" in why and "--no-sandbox" in why
