"""The built wheel in a fresh virtual environment, as a user gets it from ``pip install cmat-gym``.

Slow (it builds the wheel, makes a venv and installs the base dependencies from the package registry:
about a minute or two with a warm pip cache). The source tree is copied first (tracked files and
untracked ones git does not ignore: what a commit of this tree would hold), so the build leaves nothing
in the checkout. The venv is made by the interpreter this one was made from (not with
``--system-site-packages``), so nothing of the project's own venv leaks in: the smoke checks run from
a temporary folder, where ``import cmat_gym`` can only find the installed wheel.

Registry access is needed for the dependencies; when the install fails on the network (and only then)
the tests skip, saying so. Run: ``.venv/bin/python -m pytest -q -m slow tests/test_wheel_install.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]

# pip's words for "the registry could not be reached" (as opposed to a wrong requirement of ours)
NETWORK_ERRORS = ("NewConnectionError", "ConnectTimeout", "ReadTimeout", "Temporary failure in name resolution",
                  "Network is unreachable", "Connection refused", "ProxyError", "SSLError", "No route to host")


def run(cmd: list[str | Path], *, cwd: Path, timeout: float, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def clean_env() -> dict[str, str]:
    """This process's environment without what would point Python at the project's venv or sources."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(REPO_ROOT)))
    return env


def copy_sources(dest: Path) -> None:
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("the wheel is built from a git checkout (to know which files are sources)")
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                 timeout=60)
    assert listed.returncode == 0, listed.stderr
    for rel in filter(None, listed.stdout.split("\0")):
        src = REPO_ROOT / rel
        if src.is_file():  # a file deleted but not yet committed is still listed
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built by pip (setuptools from this venv, no download) from a copy of the sources."""
    root = tmp_path_factory.mktemp("wheel")
    copy_sources(root / "src")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist",
                 root / "src"], cwd=root, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = (root / "dist").glob("cmat_gym-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel and its base dependencies (no extras); its ``bin`` folder."""
    root = tmp_path_factory.mktemp("venv")
    made = run([sys._base_executable, "-m", "venv", root / "venv"], cwd=root, timeout=300, env=clean_env())
    assert made.returncode == 0, made.stderr
    bin_dir = root / "venv" / "bin"
    installed = run([bin_dir / "python", "-m", "pip", "install", "--quiet", wheel], cwd=root, timeout=1200,
                    env=clean_env())
    if installed.returncode != 0:
        output = installed.stdout + installed.stderr
        hit = next((e for e in NETWORK_ERRORS if e in output), None)
        if hit is not None:
            pytest.skip(f"the package registry is unreachable ({hit}); the wheel's dependencies cannot install")
        pytest.fail(f"pip install of the wheel failed:\n{output[-4000:]}")
    return bin_dir


def test_wheel_metadata(wheel: Path) -> None:
    """Project URLs, the [train] extra and the license files are in the wheel as pyproject declares them."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = zf.read(meta_name).decode()
    for label, url in project["urls"].items():
        assert f"Project-URL: {label}, {url}" in meta
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(project["urls"])
    assert 'Provides-Extra: train' in meta and "extra == \"train\"" in meta
    assert any(line.startswith("Requires-Dist: tyro") for line in meta.splitlines())
    dist_info = meta_name.rsplit("/", 1)[0]
    assert {f"{dist_info}/licenses/LICENSE", f"{dist_info}/licenses/NOTICE"} <= set(names)
    assert {"cmat_gym/py.typed", "cmat_gym/data/agentbench/NOTICE", "cmat_gym/data/agentbench/LICENSE"} <= set(names)


SMOKE = r'''
import importlib.metadata as md, importlib.resources as res, importlib.util, json, pathlib
import gymnasium as gym
import cmat_gym
from cmat_gym.agents import make_policy
from cmat_gym.evaluation import run_episodes

# the README's first snippet, on the procedural tasks
env = gym.make("cmat/DB-v0", render_mode="ansi")
obs, info = env.reset(seed=0)
obs, reward, terminated, truncated, info = env.step("Action: Operation\n```sql\nSELECT name FROM sqlite_master;\n```")
assert not terminated and "Error" not in obs[:200], obs
env.close()

# the bundled AgentBench dev split, oracle episodes
env = gym.make("cmat/DB-v0", tasks="agentbench:dbbench/dev")
results = run_episodes(env, make_policy("oracle"), 5, 0, progress=False)
env.close()

files = {str(f) for f in md.files("cmat-gym")}
print(json.dumps({
    "module": cmat_gym.__file__,
    "oracle": [r.success for r in results],
    "task_ids": [r.task_id for r in results],
    "py_typed": (res.files("cmat_gym") / "py.typed").is_file(),
    "license_files": sorted(f for f in files if "/licenses/" in f),
    "agentbench_notice": (res.files("cmat_gym") / "data/agentbench/NOTICE").read_text()[:200],
    "torch_installed": importlib.util.find_spec("torch") is not None,
    "urls": md.metadata("cmat-gym").get_all("Project-URL"),
}))
'''


def test_smoke_script(venv: Path, tmp_path: Path) -> None:
    """gym.make on bundled AgentBench data, oracle episodes, the package's data files, a base install."""
    (tmp_path / "smoke.py").write_text(SMOKE)
    done = run([venv / "python", tmp_path / "smoke.py"], cwd=tmp_path, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(report["module"]).is_relative_to(venv.parent)  # the wheel's copy, not the sources
    assert report["oracle"] == [True] * 5
    assert all(t.startswith("dbbench/dev.jsonl/") for t in report["task_ids"]), report["task_ids"]  # bundled
    assert report["py_typed"] and "AgentBench" in report["agentbench_notice"]
    assert {Path(f).name for f in report["license_files"]} >= {"LICENSE", "NOTICE"}
    assert not report["torch_installed"]  # the base install: no [train] extra
    assert any(u.startswith("Source, ") for u in report["urls"])


def test_cli_eval_oracle(venv: Path, tmp_path: Path) -> None:
    done = run([venv / "cmat-gym", "eval", "--env", "cmat/DB-v0", "--policy", "oracle", "--episodes", "2",
                "--json"], cwd=tmp_path, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout)
    assert (summary["episodes"], summary["successes"]) == (2, 2)
    bundled = run([venv / "cmat-gym", "eval", "--tasks", "agentbench:dbbench/dev", "--policy", "oracle",
                   "--episodes", "2", "--json"], cwd=tmp_path, timeout=600, env=clean_env())
    assert bundled.returncode == 0, bundled.stderr[-4000:]
    assert json.loads(bundled.stdout)["successes"] == 2


def test_language_model_without_train_extra_is_one_line(venv: Path, tmp_path: Path) -> None:
    """The base install asked for a language model says what to install, in one line, with no traceback."""
    done = run([venv / "cmat-gym", "eval", "--env", "cmat/DB-v0", "--policy", "tiny-random", "--episodes", "1"],
               cwd=tmp_path, timeout=600, env=clean_env())
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert "pip install 'cmat-gym[train]'" in lines[0]
