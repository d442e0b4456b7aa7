"""The code the grader sends into the student's kernel (as source text, formatted per exercise).

It evaluates the function expression of the exercise's test cell in the student's namespace,
poisons the reference implementations (``Exercise.references``), runs ``Exercise.run`` on the
inputs the grader wrote to disk, and writes the results back as ``.npz`` (numeric arrays only,
no pickle) plus JSON. It never judges anything: verification happens in the grader's process.
"""
from __future__ import annotations

OUTPUT_CAP_SOURCE = r'''
def __bncourse_cap_output(limit=%(limit)d):
    import sys
    class _Capped:
        def __init__(self, stream):
            self._stream, self._left, self._noted = stream, limit, False
        def write(self, text):
            if self._left <= 0:
                if not self._noted:
                    self._noted = True
                    self._stream.write("\n[grader: further output suppressed]\n")
                return len(text)
            self._left -= len(text)
            return self._stream.write(text[: max(0, self._left + len(text))])
        def __getattr__(self, name):
            return getattr(self._stream, name)
    sys.stdout = _Capped(sys.stdout)
    sys.stderr = _Capped(sys.stderr)
__bncourse_cap_output()
del __bncourse_cap_output
'''

RUN_SOURCE = r'''
def __bncourse_grade():
    import importlib, json, sys, types
    import numpy as np
    from bncourse.checks import core
    status = {"error": None, "kind": None, "reference": None}
    def finish(results=None):
        arrays, meta = core.to_wire(results or [])
        np.savez(%(out_npz)r, **arrays)
        with open(%(out_json)r, "w") as f:
            json.dump({"status": status, "meta": meta}, f)
    try:
        fn = eval(%(expr)r, globals())
    except BaseException as e:
        status.update(kind="missing", error=f"{type(e).__name__}: {e}")
        return finish()
    ex = core.get_exercise(%(name)r)
    with np.load(%(cases_npz)r, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    cases = core.from_wire(arrays, open(%(cases_json)r).read())

    # poison the reference implementations, and watch for calls to any copy of their code
    trap_mod = types.ModuleType("_bncourse_trap")
    trap_mod.hits = []
    sys.modules["_bncourse_trap"] = trap_mod
    restore, codes = [], {}
    def trap_for(ref):
        ns = {}
        exec("def _trap(*args, **kwargs):\n"
             f"    __import__('sys').modules['_bncourse_trap'].hits.append({ref!r})\n"
             f"    raise RuntimeError('the reference implementation {ref} may not be used here')\n", ns)
        return ns["_trap"]
    for ref in ex.references:
        modname, _, attr = ref.partition(":")
        try:
            mod = importlib.import_module(modname)
            obj = getattr(mod, attr)
        except Exception:
            continue
        trap = trap_for(ref)
        if isinstance(obj, type):
            for klass in obj.__mro__:
                if klass.__module__.startswith(("torch.nn.modules.module", "builtins")):
                    continue
                for v in vars(klass).values():
                    if isinstance(v, types.FunctionType):
                        codes[v.__code__] = ref
            restore.append((obj, "__init__", obj.__dict__.get("__init__")))
            obj.__init__ = trap
        else:
            if isinstance(obj, types.FunctionType):
                codes[obj.__code__] = ref
                if not obj.__code__.co_freevars:
                    restore.append((obj, "__code__", obj.__code__))
                    obj.__code__ = trap.__code__
            restore.append((mod, attr, obj))
            setattr(mod, attr, trap)
    def profiler(frame, event, arg):
        if event == "call":
            ref = codes.get(frame.f_code)
            if ref is not None:
                trap_mod.hits.append(ref)
    results = None
    sys.setprofile(profiler)
    try:
        results = core.run_cases(ex, fn, cases, timeout=%(timeout)r)
    except NotImplementedError:
        status.update(kind="not_implemented", error="NotImplementedError")
    except core.CheckTimeout as e:
        status.update(kind="timeout", error=str(e))
    except core.CheckFailure as e:
        status.update(kind="failure", error=str(e))
    except BaseException as e:
        status.update(kind="exception", error=f"{type(e).__name__}: {e}")
    finally:
        sys.setprofile(None)
        for obj, attr, old in reversed(restore):
            if old is None:
                try:
                    delattr(obj, attr)
                except AttributeError:
                    pass
            else:
                setattr(obj, attr, old)
    if trap_mod.hits:
        status.update(kind="reference", reference=trap_mod.hits[0], error=None)
        results = None
    finish(results)
try:
    __bncourse_grade()
finally:
    del __bncourse_grade
'''
