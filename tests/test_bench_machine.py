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
