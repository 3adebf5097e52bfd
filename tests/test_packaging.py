"""The built wheel carries the bundled models, data subsets and targets: installed into a
fresh virtual environment, onnxamc runs its default job from an unrelated directory."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """A venv holding only the onnxamc wheel; its dependencies come from this
    environment's site-packages through a .pth path (not a site dir, so this
    environment's editable onnxamc stays invisible)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = _without_pythonpath()  # pip must not take the checkout on a path for installed
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp / "dist"), str(ROOT)], check=True,
                   env=env)
    wheel = next((tmp / "dist").glob("onnxamc-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel)], check=True, env=env)
    return venv


def _without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_every_package_is_listed_for_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "onnxamc").rglob("__init__.py")}
    assert found <= listed, found - listed
    assert {"onnxamc.models", "onnxamc.targets"} <= listed


def test_wheel_runs_the_default_job_from_another_directory(installed_wheel, tmp_path):
    python = installed_wheel / "bin" / "python"
    env = _without_pythonpath()  # the wheel's onnxamc, only
    found = subprocess.run([python, "-c", "import onnxamc, onnxamc.models as m; "
                            "print(onnxamc.__file__); print(m.BUNDLED['resnet20'])"],
                           cwd=tmp_path, capture_output=True, text=True, env=env)
    assert found.returncode == 0, found.stderr
    where = found.stdout.split()
    assert all(str(installed_wheel) in line for line in where), where  # not the checkout
    run = subprocess.run([installed_wheel / "bin" / "onnxamc", "compress", "--trials", "3",
                          "--runs", "5", "--no-progress", "--no-report",
                          "--eval-samples", "200"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "resnet20-compressed.onnx").stat().st_size > 0
    targets = subprocess.run([installed_wheel / "bin" / "onnxamc", "targets"], cwd=tmp_path,
                             capture_output=True, text=True, env=env)
    assert "cpu-ort" in targets.stdout and "arm64-tvm" in targets.stdout
