"""Batch grading of submitted exercise notebooks: ``bncourse grade``.

Modules: ``cli`` (the command), ``core`` (reading, matching, running and scoring one submission, in named
steps), ``sandbox`` (the bubblewrap sandbox every kernel runs in), ``_launcher`` (its first process),
``kernel_side`` (the only code the grader runs inside the student's kernel), ``report`` (table, CSV,
Gradescope ``results.json``), ``gradescope`` (``bncourse gradescope ASSIGNMENT``: the autograder zip, and
what its ``run_autograder`` runs inside Gradescope; there grading is usually unsandboxed, see that module).

Threat model
------------
Trusted: the solutions notebooks; the ``bncourse`` installed in the grader's process; the Python
installation and its packages; the grading machine and its bubblewrap.

Untrusted: the submitted notebook and everything its kernel does or writes: its outputs and messages,
the files it leaves, the results it hands back, any module it patches inside its own kernel (including
``bncourse`` and ``kernel_side``).

Guaranteed (tested against hostile submissions in ``tests/test_grading_sandbox.py``):

* points come only from ``Exercise.verify`` run in the grader's process, on inputs drawn with a seed
  chosen at grading time; results cross back as numeric arrays (``.npz``, no pickle) and JSON scalars,
  read without following symbolic links and refused beyond a size cap (also for zip members) before
  they are parsed; anything else is ``Opaque``;
* with the sandbox (the default), the kernel sees the Python installation, the installed packages and
  the ``bncourse`` package directory read-only, a private size-limited ``/tmp`` and nothing else: not the
  repository around an editable install (``solutions/``), not the home directory, the submissions, the
  solutions being graded against or the output folder, not another process (own PID namespace), not the
  network (own empty network namespace). So it can neither read the solutions nor change any file the
  grader or a classmate owns, and a submission that tries gets a row like any other;
* the kernel gets an allow-listed environment (``sandbox.KERNEL_ENV``), never the grader's variables;
* every submission gets its own fresh kernel, sandbox and directory: to save time a grading process
  launches the next submission's kernel while it grades the current one (``core.KernelPool``; the kernel
  imports numpy, torch and ``bncourse.checks`` at start-up, before any cell), but a kernel is never
  reused, so nothing one student's code did can reach another's;
* per kernel: address space (``--memory-limit``, default 4 GiB), processes and threads (64), file size,
  scratch space, CPU time and open files are limited; processes a cell leaves behind are killed after the
  cell; a cell that hangs, exhausts a limit or kills its kernel is stopped, the notebook replayed without
  it, and the submission still gets its row; the submission file is only ever read.

Best effort (a determined student can get around these, and the grade then depends on a human look):

* poisoning the reference implementations (``Exercise.references``): code copied from the reference's
  source file, or a patched ``kernel_side``, defeats it;
* the memory limit is per process: a sandbox's total can reach (processes x memory limit); and CPU time
  is not shared fairly between parallel kernels (a spinning cell slows the others until its time limit).
  A hard total needs cgroups (a container with limits);
* hiding the grader's paths: the kernel knows where the Python installation and the package are mounted
  (they keep their host paths), though nothing else behind those paths is reachable; bubblewrap's own
  options reach it through a pipe, so no command line in the sandbox lists the mounts.

Not provided: protection against a kernel or bubblewrap vulnerability (use a container or a throwaway
VM for high-stakes grading); with ``--no-sandbox`` (e.g. inside Gradescope's throwaway container, where
user namespaces are usually unavailable) the kernel runs with the grader's rights, every row says so,
and only the first guarantee above holds.
"""
