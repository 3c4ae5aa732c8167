"""Build the dbstruct wheel with the bundle's own artifact command, as ``databricks bundle
deploy`` does before uploading it (databricks.yml, ``artifacts.default.build``).

    wheel = build_bundle_wheel(tmp_path)    # tmp_path/dist/dbstruct-0.1.0-py3-none-any.whl

The command runs in a copy of what a wheel build reads (pyproject.toml, README.md, src/), so
the setuptools ``build/`` and ``*.egg-info`` folders it leaves behind stay out of the working
tree; ``--outdir`` is the only argument added to the bundle's command.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

__all__ = ["ROOT", "build_bundle_wheel", "bundle_build_command"]

ROOT = Path(__file__).resolve().parents[2]
_SOURCES = ("pyproject.toml", "README.md", "src")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def bundle_build_command(root: Path = ROOT) -> list[str]:
    """The ``build`` command of the bundle's wheel artifact, split as a shell would."""
    bundle = yaml.safe_load((root / "databricks.yml").read_text(encoding="utf-8"))
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl" and artifact["path"] == ".", artifact
    return shlex.split(artifact["build"])


def build_bundle_wheel(workdir: Path, root: Path = ROOT) -> Path:
    """Run the bundle's build command on a copy of ``root``; the path of the one wheel built."""
    source = workdir / "source"
    source.mkdir(parents=True)
    for name in _SOURCES:
        if (root / name).is_dir():
            shutil.copytree(root / name, source / name, ignore=_IGNORED)
        else:
            shutil.copy2(root / name, source / name)
    command = bundle_build_command(root)
    if command[0] == "python":  # the interpreter running the tests, which has `build`
        command[0] = sys.executable
    out = workdir / "dist"
    done = subprocess.run(
        [*command, "--outdir", str(out)], cwd=source, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{shlex.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    (wheel,) = out.glob("*.whl")
    return wheel
