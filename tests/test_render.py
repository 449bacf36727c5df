"""Rendering is a pure function of (template and technique sources, answers), shared with Copier."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from support import REPO
from generator.render import render_model
from generator.sync import read_tree


def _answers(model: str) -> dict:
    return yaml.safe_load((REPO / "generated" / model / ".copier-answers.yml").read_text())


def test_render_is_byte_identical_across_processes() -> None:
    script = (
        "import sys, json, yaml\n"
        "from pathlib import Path\n"
        "from generator.render import render_model\n"
        "answers = yaml.safe_load(Path('generated/app_install/.copier-answers.yml').read_text())\n"
        "print(json.dumps(render_model(Path('.').resolve(), answers, 'app_install'), sort_keys=True))\n"
    )
    outputs = {subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert len(outputs) == 1
    assert render_model(REPO, _answers("app_install"), "app_install") == read_tree(REPO / "generated/app_install")


def test_copier_copy_gives_the_same_tree_as_smt_generate(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yml"
    answers.write_text(yaml.safe_dump(_answers("marketplace")))
    destination = tmp_path / "marketplace"
    copier = Path(sys.executable).with_name("copier")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [str(copier), "copy", "--trust", "--defaults", "--quiet", "--data-file", str(answers), str(REPO / "template_repo"), str(destination)],
        check=True,
        env=env,
    )
    assert read_tree(destination) == read_tree(REPO / "generated/marketplace")
    assert yaml.safe_load((destination / ".copier-answers.yml").read_text())["techniques"] == _answers("marketplace")["techniques"]


def test_copier_copy_refuses_an_unknown_technique(tmp_path: Path) -> None:
    spec = _answers("marketplace")
    spec["techniques"] = [{"name": "no_such_technique"}]
    answers = tmp_path / "answers.yml"
    answers.write_text(yaml.safe_dump(spec))
    destination = tmp_path / "out"
    copier = Path(sys.executable).with_name("copier")
    proc = subprocess.run(
        [str(copier), "copy", "--trust", "--defaults", "--quiet", "--data-file", str(answers), str(REPO / "template_repo"), str(destination)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "techniques[0].name: unknown technique 'no_such_technique'" in proc.stderr
    assert not destination.exists()
