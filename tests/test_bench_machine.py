"""What the benchmarks record about the code they timed."""
import os
import shutil
import subprocess

import pytest

from perceptrons.benchmarks import machine

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


@needs_git
def test_git_commit_ignores_a_foreign_repository(tmp_path):
    # An installed package in site-packages can sit inside the Python installation's own git tree
    # (pyenv's): that HEAD must not be reported as the commit of the kernels timed.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    inner = tmp_path / "site-packages" / "perceptrons" / "benchmarks"
    inner.mkdir(parents=True)
    (inner / "f.txt").write_text("x")
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-qm", "c"], check=True, env=env)
    assert machine.git_commit(str(inner)) is None


@needs_git
def test_git_commit_of_this_checkout(tmp_path):
    here = os.path.dirname(os.path.abspath(machine.__file__))
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True)
    if top.returncode != 0:
        pytest.skip("the package is not run from a git checkout")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True).stdout.strip()
    got = machine.git_commit(here)
    if os.path.isdir(os.path.join(top.stdout.strip(), "python", "perceptrons", "benchmarks")):
        assert got is not None and got["commit"] == head
    else:
        assert got is None


# Runs in a child process: pin_malloc("warm") lasts for the process, and the test process must keep
# glibc's defaults. Allocates, touches and frees a 64 MB block (above glibc's largest dynamic mmap
# threshold, so by default it is mapped fresh, and faults in, on every allocation) and prints the
# page faults of the last rounds, after warm-up.
_FAULTS_CHILD = r"""
import ctypes, resource, sys
from perceptrons.benchmarks import machine
state = machine.pin_malloc(sys.argv[1])
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def once():
    p = libc.malloc(64 << 20)
    ctypes.memset(p, 1, 64 << 20)
    libc.free(p)
for _ in range(3):
    once()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    once()
print(state["applied"], resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_after_warmup(mode):
    import sys
    out = subprocess.run([sys.executable, "-c", _FAULTS_CHILD, mode], capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not hasattr(__import__("ctypes").CDLL(None), "mallopt"), reason="needs glibc's mallopt")
def test_warm_malloc_reuses_freed_memory():
    applied, warm = _faults_after_warmup("warm")
    assert applied
    _, default = _faults_after_warmup("default")
    # By default each of the 5 allocations faults all of its pages in again: 16,384 4 KB pages, or 32
    # where transparent huge pages are always on. Warm, the same pages come back: next to none.
    assert default >= 5 * 32
    assert warm <= 16 and warm * 10 < default


def test_pin_malloc_names_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"malloc: expected one of \('warm', 'default'\), got 'cold'"):
        machine.pin_malloc("cold")


def test_malloc_text_says_what_was_measured():
    assert "no candidate pays page faults" in machine.malloc_text({"mode": "warm", "applied": True, "note": ""})
    assert "not applied" in machine.malloc_text({"mode": "warm", "applied": False, "note": "no mallopt"})
    assert "default" in machine.malloc_text(machine.pin_malloc("default"))


def test_concurrent_peak_measures_every_core():
    from perceptrons import _C
    per_core = machine.measured_concurrent_peak_gflops(_C.cpu_isa(), 2, seconds=0.05)
    assert len(per_core) == 2 and all(g > 0 for g in per_core)


def test_copy_bandwidth_is_measured_at_one_thread_and_restores_the_thread_count():
    import torch
    before = torch.get_num_threads()
    gbs = machine.one_thread_copy_bandwidth_gbs()
    assert torch.get_num_threads() == before
    assert 0.1 < gbs < 10_000  # GB/s: any real memory system
    assert machine.copy_bandwidth(1 << 20, repeats=2) > 0
