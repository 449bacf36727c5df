"""Technique composition, provenance, versioning and local techniques,
driven through the real `smt` CLI on a private copy of the repository."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from support import REPO, run_smt, snapshot


def _write_technique(folder: Path, meta: dict, **files: str) -> None:
    folder.mkdir(parents=True)
    (folder / "technique.yml").write_text(yaml.safe_dump(meta, sort_keys=False))
    for name, source in files.items():
        (folder / name.replace("__", ".")).write_text(textwrap.dedent(source))


def _meta(name: str, **extra: object) -> dict:
    return {"name": name, "version": "1.0.0", "summary": f"{name} test technique.", "reference": "Test.", "params": {}, **extra}


def _use(root: Path, model: str, *techniques: dict) -> None:
    spec_path = root / "generated" / model / ".copier-answers.yml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["techniques"] = [*spec.get("techniques", []), *techniques]
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))


OVER_ARCH_PATCH = '''
    """Scale the over arch output."""

    import torch
    from torch import nn

    from .config import ModelConfig


    class OverArch(nn.Module):
        """Shared MLP, output scaled by 0.5. Returns: tensor of shape B X output_dim."""

        def __init__(self, config: ModelConfig, in_dim: int) -> None:
            super().__init__()
            self.mlp = MLP(in_dim, config.over_arch_layers, config.dropout)
            self.output_dim = self.mlp.output_dim

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 0.5 * self.mlp(x)
'''


def test_recorded_versions_match_every_technique() -> None:
    result = run_smt(REPO, "techniques", "lock", "--check")
    assert result.code == 0, result.out + result.err


def test_a_change_without_a_version_bump_fails_and_check_names_affected_models(repo_copy: Path) -> None:
    patch = repo_copy / "techniques/dcn_v2/model.py"
    patch.write_text(patch.read_text().replace("return torch.addcmul(x, x0, self.projection(x))", "return torch.addcmul(x, x0, self.projection(x) + 0.0)"))

    lock = run_smt(repo_copy, "techniques", "lock", "--check")
    assert lock.code == 1
    version = yaml.safe_load((repo_copy / "techniques/dcn_v2/technique.yml").read_text())["version"]
    assert f"dcn_v2 changed but its version is still {version}; bump version" in lock.out
    assert run_smt(repo_copy, "techniques", "lock").code == 2  # refuses to record an unbumped change

    check = run_smt(repo_copy, "check")
    assert check.code == 1
    assert f"technique dcn_v2 changed since version {version} was recorded; it affects 2 model(s): app_install, feed_ctr" in check.out

    meta = repo_copy / "techniques/dcn_v2/technique.yml"
    major, minor, micro = version.split(".")
    meta.write_text(meta.read_text().replace(f"version: {version}", f"version: {major}.{minor}.{int(micro) + 1}"))
    assert run_smt(repo_copy, "techniques", "lock").code == 0
    assert run_smt(repo_copy, "techniques", "lock", "--check").code == 0


def test_a_template_change_under_a_replacing_technique_fails_lock_check_and_check(repo_copy: Path) -> None:
    """A technique replacing InteractionArch carries its own version of it: a change to the template's
    must be ported (or judged not to apply) and re-locked, or models using the technique silently miss it."""
    model_py = repo_copy / "template_repo/template/{{ model_name }}/model.py.jinja"
    text = model_py.read_text()
    assert text.count("return torch.cat([dense, flat], dim=1) if self.dense_dim else flat") == 1
    model_py.write_text(text.replace("torch.cat([dense, flat], dim=1)", "torch.cat([flat, dense], dim=1)"))
    line = (
        "technique dcn_v2 replaces InteractionArch of model.py, whose template definition changed since it was locked; "
        "port the change into techniques/dcn_v2/model.py, then run `smt techniques lock`"
    )

    lock = run_smt(repo_copy, "techniques", "lock", "--check")
    assert lock.code == 1 and line in lock.out.splitlines()
    assert {text.split()[1] for text in lock.out.splitlines()} == {"autoint", "dcn_v2", "fibinet", "finalmlp"}
    assert run_smt(repo_copy, "generate").code == 0
    check = run_smt(repo_copy, "check")  # generated/ is in sync: dcn_v2's copy hides the change
    assert check.code == 1 and line in check.out.splitlines()

    assert run_smt(repo_copy, "techniques", "lock").code == 0  # judged: InteractionArch's order does not apply
    assert run_smt(repo_copy, "techniques", "lock", "--check").code == 0
    assert run_smt(repo_copy, "check").code == 0


def test_blame_names_technique_template_and_config_params() -> None:
    model_py = (REPO / "generated/feed_ctr/feed_ctr/model.py").read_text().splitlines()
    cross = next(i for i, line in enumerate(model_py, 1) if "return torch.addcmul(x, x0, self.projection(x))" in line)
    over = next(i for i, line in enumerate(model_py, 1) if line.startswith("class OverArch"))
    result = run_smt(REPO, "blame", f"generated/feed_ctr/feed_ctr/model.py:{cross}")
    assert result.code == 0, result.err
    version = yaml.safe_load((REPO / "techniques/dcn_v2/technique.yml").read_text())["version"]
    assert f"technique dcn_v2 {version} (techniques/dcn_v2)" in result.out
    result = run_smt(REPO, "blame", f"generated/feed_ctr/feed_ctr/model.py:{over}")
    assert "template (template_repo/template/{{ model_name }}/model.py.jinja)" in result.out
    config_py = (REPO / "generated/feed_ctr/feed_ctr/config.py").read_text().splitlines()
    field = next(i for i, line in enumerate(config_py, 1) if "dcn_v2: DcnV2Params" in line)
    assert f"technique dcn_v2 {version}" in run_smt(REPO, "blame", f"generated/feed_ctr/feed_ctr/config.py:{field}").out
    bad = run_smt(REPO, "blame", "generated/feed_ctr/feed_ctr/model.py:999999")
    assert bad.code == 2 and "the file has" in bad.err


def test_blame_gives_every_line_of_a_replaced_definition_to_the_technique() -> None:
    """mmoe replaces TaskTowers in app_install: its class line and docstring read like the
    template's, yet every line from the provenance comment to the class's last line is mmoe's, and
    the blank line after it is the template's again."""
    model_py = (REPO / "generated/app_install/app_install/model.py").read_text().splitlines()
    comment = next(i for i, line in enumerate(model_py, 1) if line.startswith("# SMT technique mmoe") and "TaskTowers" in line)
    start = comment + 1
    assert model_py[start - 1] == "class TaskTowers(nn.Module):"
    following = next(i for i in range(start + 1, len(model_py) + 1) if model_py[i - 1] and not model_py[i - 1].startswith((" ", "#")))
    end = max(i for i in range(start, following) if model_py[i - 1].strip())  # the class's last line
    result = run_smt(REPO, "blame", f"generated/app_install/app_install/model.py:{comment}-{end + 1}")
    assert result.code == 0, result.err
    version = yaml.safe_load((REPO / "techniques/mmoe/technique.yml").read_text())["version"]
    authors = [line.split(": ", 1)[1] for line in result.out.splitlines() if line.startswith("generated/")]
    assert len(authors) == end + 2 - comment
    assert set(authors[:-1]) == {f"technique mmoe {version} (techniques/mmoe)"}, authors
    assert authors[-1] == "template (template_repo/template/{{ model_name }}/model.py.jinja)"


def test_local_technique_is_applied_kept_and_blamed(repo_copy: Path) -> None:
    model_dir = repo_copy / "generated/notification_open"
    _write_technique(model_dir / "local_techniques/half_over", _meta("half_over"), model__py=OVER_ARCH_PATCH)
    _use(repo_copy, "notification_open", {"name": "half_over"})

    assert run_smt(repo_copy, "check", "notification_open").code == 1
    result = run_smt(repo_copy, "generate")
    assert result.code == 0, result.err
    model_py = (model_dir / "notification_open/model.py").read_text()
    assert "# SMT technique local:half_over 1.0.0: replaces extension point OverArch." in model_py
    assert "return 0.5 * self.mlp(x)" in model_py
    assert (model_dir / "local_techniques/half_over/technique.yml").is_file()  # survives regeneration
    assert "`half_over`" in (model_dir / "README.md").read_text()
    assert run_smt(repo_copy, "check").code == 0

    line = next(i for i, text in enumerate(model_py.splitlines(), 1) if "return 0.5 * self.mlp(x)" in text)
    blame = run_smt(repo_copy, "blame", f"generated/notification_open/notification_open/model.py:{line}")
    assert "local technique local:half_over 1.0.0 (generated/notification_open/local_techniques/half_over)" in blame.out


def test_local_technique_takes_part_in_conflict_detection(repo_copy: Path) -> None:
    patch = OVER_ARCH_PATCH.replace("class OverArch", "class InteractionArch").replace("in_dim: int", "dense_dim: int")
    _write_technique(repo_copy / "generated/feed_ctr/local_techniques/mine", _meta("mine"), model__py=patch)
    _use(repo_copy, "feed_ctr", {"name": "mine"})
    before = snapshot(repo_copy)
    result = run_smt(repo_copy, "generate")
    assert result.code == 2
    assert "techniques 'dcn_v2' and 'mine' both replace extension point InteractionArch in model.py" in result.err
    assert snapshot(repo_copy) == before


def test_a_local_technique_building_on_no_technique_names_its_metadata(repo_copy: Path) -> None:
    """builds_on of a technique that exists nowhere: fix technique.yml (adding it to the spec cannot work)."""
    _write_technique(
        repo_copy / "generated/notification_open/local_techniques/mine", _meta("mine", builds_on=["nosuch"]), model__py=OVER_ARCH_PATCH
    )
    _use(repo_copy, "notification_open", {"name": "mine"})
    before = snapshot(repo_copy)
    result = run_smt(repo_copy, "generate", "notification_open")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "local_techniques/mine/technique.yml: builds_on: 'nosuch' is not a technique; fix the name or remove it" in result.err
    assert "add" not in result.err
    assert snapshot(repo_copy) == before


def test_builds_on_allows_a_second_replacement_and_orders_it(repo_copy: Path) -> None:
    _write_technique(repo_copy / "techniques/over_a", _meta("over_a"), model__py=OVER_ARCH_PATCH)
    _write_technique(
        repo_copy / "techniques/aa_over_b", _meta("aa_over_b", builds_on=["over_a"]), model__py=OVER_ARCH_PATCH.replace("0.5 *", "0.25 *")
    )
    _use(repo_copy, "notification_open", {"name": "aa_over_b"}, {"name": "over_a"})
    assert run_smt(repo_copy, "generate", "notification_open").code == 0, "builds_on should allow it"
    model_py = (repo_copy / "generated/notification_open/notification_open/model.py").read_text()
    assert "return 0.25 * self.mlp(x)" in model_py  # applied after over_a despite its name sorting first

    meta = repo_copy / "techniques/aa_over_b/technique.yml"
    meta.write_text(meta.read_text().replace("builds_on:\n- over_a", "after:\n- over_a"))
    result = run_smt(repo_copy, "generate", "notification_open")
    assert result.code == 2 and "both replace extension point OverArch" in result.err


def test_cycles_and_missing_requirements_are_errors(repo_copy: Path) -> None:
    _write_technique(repo_copy / "techniques/one", _meta("one", after=["two"]), model__py=OVER_ARCH_PATCH)
    _write_technique(repo_copy / "techniques/two", _meta("two", after=["one"], requires=["three"]), train__py="def after_backward(model, config) -> None:\n    pass\n")
    _use(repo_copy, "notification_open", {"name": "one"})
    _use(repo_copy, "search_ads_ctr", {"name": "one"}, {"name": "two"})
    spec = yaml.safe_load((repo_copy / "generated/search_ads_ctr/.copier-answers.yml").read_text())

    result = run_smt(repo_copy, "generate", "search_ads_ctr")
    # 'three' does not exist, so "add it to the spec" could not work: the metadata is what to fix
    assert result.code == 2 and "two/technique.yml: requires: 'three' is not a technique of the library; fix the name" in result.err

    spec["techniques"] = [{"name": "one"}, {"name": "two"}]
    meta = repo_copy / "techniques/two/technique.yml"
    meta.write_text(meta.read_text().replace("requires:\n- three\n", ""))
    result = run_smt(repo_copy, "generate", "search_ads_ctr")
    assert result.code == 2 and "ordering cycle" in result.err



def test_techniques_show_prints_everything_a_reviewer_needs() -> None:
    result = run_smt(REPO, "techniques", "show", "mmoe")
    assert result.code == 0, result.err
    version = yaml.safe_load((REPO / "techniques/mmoe/technique.yml").read_text())["version"]
    for expected in (f"mmoe {version}:", "reference:", "num_experts: int = 4", "preconditions: min_objectives 2",
                     "conflicts: none", "extension points: model.py:TaskTowers (replace)", "used by: app_install",
                     "--- techniques/mmoe/model.py (patch for model.py) ---", "class TaskTowers(nn.Module):"):
        assert expected in result.out, expected
    assert run_smt(REPO, "techniques", "show", "nope").code == 2
