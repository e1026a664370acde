"""The wheel: built with ``pip wheel . --no-deps``, installed outside the repository, it trains the default config
(the configs ship inside it as gan.configs)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_wheel_installed_outside_the_repo_runs_the_default_config(tmp_path):
    source = tmp_path / "src"  # a copy, so that building writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "gan", "configs"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if name == "gan" else {}))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(wheels)], check=True)
    (wheel,) = wheels.glob("spectral_gan-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    code = "import sys, gan; print(gan.__file__); from gan.cli import train_main; sys.exit(train_main(sys.argv[1:]))"
    args = ["--run-dir", "run", "--set", "train.steps=2", "--set", "train.lr_decay_steps=1"]
    args += [f"--set=hooks.{h}.every=0" for h in ("fid", "paired_l1", "lipschitz", "images")]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(site))  # the installed copy, not the checkout
    assert (work / "run" / "checkpoints" / "last.pt").is_file()
    assert "data:\n  source: synthetic\n  image_size: 32" in (work / "run" / "config.yaml").read_text()
