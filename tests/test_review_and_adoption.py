"""Code review and adoption across the fleet: smt diff --since, preview, adopt, drop, status.

Each test works in a private git repository made from a copy of this one, with real git."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from support import run_smt, snapshot


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(repo_copy: Path) -> Path:
    _git(repo_copy, "init", "-q", "-b", "main")
    _git(repo_copy, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    _git(repo_copy, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fleet")
    return repo_copy


def _qualified(root: Path, technique: str, label: str | None = None, **fields: object) -> None:
    """A passing verdict of ``label`` (default: the technique alone) at the current technique and
    template versions in qualification/records/, written by hand: these tests are about adoption,
    not about the numbers (tests/test_qualification.py runs real qualifications)."""
    version = yaml.safe_load((root / "techniques" / technique / "technique.yml").read_text())["version"]
    template = (root / "template_repo" / "VERSION").read_text().strip()
    path = root / "qualification" / "records" / f"{technique}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(path.read_text()) if path.is_file() else {}
    record = {"passed": True, "reasons": [], "models": ["feed_ctr"], "seeds": 2, "steps": 300, "mean_gain": 0.01, "report": "r", **fields}
    records.setdefault(f"{version}@template-{template}", {})[label or technique] = record
    path.write_text(json.dumps(records))


def _techniques(root: Path, model: str) -> list[str]:
    spec = yaml.safe_load((root / "generated" / model / ".copier-answers.yml").read_text())
    return [use["name"] for use in spec.get("techniques") or []]


def test_diff_since_reports_a_technique_change_per_model(repo: Path) -> None:
    patch = repo / "techniques/mmoe/model.py"
    patch.write_text(patch.read_text().replace("class TaskTowers(nn.Module):", "class TaskTowers(nn.Module):  # reviewed", 1))

    version = yaml.safe_load((repo / "techniques/mmoe/technique.yml").read_text())["version"]
    result = run_smt(repo, "diff", "--since", "HEAD", "--format", "json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    affected = {model["model"]: model for model in report["affected"]}
    users = {path.parent.name for path in (repo / "generated").glob("*/.copier-answers.yml") if "mmoe" in _techniques(repo, path.parent.name)}
    assert users and set(affected) == users  # exactly the models using mmoe
    assert "feed_ctr" in report["unaffected"]
    for model in affected.values():
        assert [f["path"] for f in model["files"]] == [f"{model['model']}/model.py"]
        assert model["added_lines"] == 1 and model["removed_lines"] == 1
        assert model["techniques"] == [f"mmoe {version}"]
        assert "+class TaskTowers(nn.Module):  # reviewed" in model["diff"]
    assert "techniques/mmoe/model.py" in report["changed_sources"]

    markdown = run_smt(repo, "diff", "--since", "HEAD", "--format", "markdown").out
    assert f"**{len(users)}** model(s) affected (+{len(users)} / -{len(users)} lines)" in markdown
    assert f"| `app_install` | 1 | 1 | 1 | +0 | +0.0000 | `mmoe {version}` |" in markdown
    assert "```diff" in markdown

    bad = run_smt(repo, "diff", "--since", "no-such-ref")
    assert bad.code == 2 and "no-such-ref" in bad.err


def test_preview_writes_nothing_and_reports_models_it_does_not_apply_to(repo: Path) -> None:
    before = snapshot(repo)
    result = run_smt(repo, "preview", "mmoe", "--all-eligible")
    assert result.code == 0, result.err
    assert "not applicable to feed_ctr: techniques[" in result.out and "'mmoe' needs at least 2 objectives" in result.out
    assert "not applicable to app_install: already uses it" in result.out
    assert "model(s) affected" in result.out
    assert snapshot(repo) == before

    result = run_smt(repo, "preview", "residual_mlp", "--models", "feed_ctr")
    assert "feed_ctr" in result.out and "+class ResidualBlock(nn.Module):" in result.out
    assert snapshot(repo) == before


def test_adopt_where_and_drop_update_specs_and_code(repo: Path) -> None:
    _qualified(repo, "residual_mlp")
    _qualified(repo, "mmoe", "mmoe:num_experts=2")
    result = run_smt(repo, "adopt", "residual_mlp", "--where", "num_objectives == 1 and 'dcn_v2' not in techniques")
    assert result.code == 0, result.err
    assert "search_ads_ctr: adopted residual_mlp" in result.out and "notification_open: adopted residual_mlp" in result.out
    assert "video_vtr: unchanged (already uses it)" in result.out
    assert "residual_mlp" in _techniques(repo, "search_ads_ctr")
    assert "feed_ctr" not in result.out  # uses dcn_v2: not selected
    assert "SMT technique residual_mlp" in (repo / "generated/search_ads_ctr/search_ads_ctr/model.py").read_text()
    assert run_smt(repo, "check").code == 0

    result = run_smt(repo, "adopt", "mmoe", "--all-eligible", "--param", "num_experts=2")
    assert "feed_ctr: not applicable: techniques[" in result.out and "technique 'mmoe' needs at least 2 objectives" in result.out
    assert "app_install: mmoe {num_experts: 3, expert_dim: 32, expert_layers: [64]} -> {num_experts: 2," in result.out
    spec = yaml.safe_load((repo / "generated/app_install/.copier-answers.yml").read_text())
    assert {"name": "mmoe", "params": {"num_experts": 2, "expert_dim": 32}} in spec["techniques"]  # expert_dim kept

    result = run_smt(repo, "drop", "residual_mlp", "--models", "search_ads_ctr")
    assert result.code == 0 and "residual_mlp" not in _techniques(repo, "search_ads_ctr")
    assert "SMT technique residual_mlp" not in (repo / "generated/search_ads_ctr/search_ads_ctr/model.py").read_text()
    assert run_smt(repo, "check").code == 0


def test_adopt_refuses_bad_requests_and_writes_nothing(repo: Path) -> None:
    before = snapshot(repo)
    for args, message in (
        (("adopt", "mmoe", "--models", "feed_ctr"), "technique 'mmoe' needs at least 2 objectives; this model has 1"),
        (("adopt", "residual_mlp", "--models", "feed_ctr", "--force"), '--force needs --reason "why'),
        (("adopt", "nope", "--all-eligible"), "nope: unknown technique"),
        (("adopt", "dcn_v2", "--where", "__import__('os')"), "Call is not allowed"),
        (("adopt", "dcn_v2", "--where", "colour == 1"), "unknown name 'colour'"),
        (("adopt", "dcn_v2"), "exactly one of --models"),
        (("adopt", "dcn_v2", "--all-eligible", "--param", "num_cross_layers=lots"), "dcn_v2.params.num_cross_layers: expected int"),
    ):
        result = run_smt(repo, *args)
        assert result.code == 2, (args, result.out, result.err)
        assert message in result.err, (args, result.err)
    assert snapshot(repo) == before


def test_adopt_refuses_a_technique_without_passing_evidence_and_writes_nothing(repo: Path) -> None:
    """The gate is on by default: no record of this change at this template version, or a failing
    one, is exit 1 and one line naming the record; other params are another change."""
    before = snapshot(repo)
    version = yaml.safe_load((repo / "techniques/residual_mlp/technique.yml").read_text())["version"]
    template = (repo / "template_repo/VERSION").read_text().strip()
    result = run_smt(repo, "adopt", "residual_mlp", "--models", "feed_ctr")
    assert result.code == 1 and not result.out
    assert result.err.strip().splitlines() == [
        f"error: residual_mlp: no passing qualification record for residual_mlp {version} at template {template}"
        f" (qualification/records/residual_mlp.json [{version}@template-{template}]['residual_mlp'] is missing);"
        ' run `smt qualify residual_mlp`, or add --verify, or --force --reason "..."; nothing written'
    ]
    _qualified(repo, "residual_mlp", passed=False, reasons=["mean relative logloss gain -0.100% is below the required 0.200%"])
    failing = run_smt(repo, "adopt", "residual_mlp", "--models", "feed_ctr")
    assert failing.code == 1 and "FAILs residual_mlp: mean relative logloss gain -0.100% is below" in failing.err
    _qualified(repo, "field_dropout")
    other_params = run_smt(repo, "adopt", "field_dropout", "--models", "feed_ctr", "--param", "rate=0.3")
    assert other_params.code == 1 and "field_dropout:rate=0.3: no passing qualification record" in other_params.err
    assert snapshot(repo) == before
    _qualified(repo, "residual_mlp")
    assert run_smt(repo, "adopt", "residual_mlp", "--models", "feed_ctr").code == 0  # the passing record


def test_a_record_that_fails_on_a_model_keeps_the_technique_out_of_it_even_with_verify(repo: Path) -> None:
    """A qualification that found harm on video_vtr blocks it: before any training (no
    qualification.yml here, which --verify would need), exit 1 naming the model and the record."""
    before = snapshot(repo)
    _qualified(repo, "dense_log_norm", passed=False, models=["feed_ctr", "video_vtr"], failed_models=["video_vtr"],
               reasons=["mean relative logloss gain -0.780% is below the required 0.200%", "video_vtr: logloss worse by +1.56% (95% interval [+1.20%, +1.93%]), beyond the 0.50% bound"])
    result = run_smt(repo, "adopt", "dense_log_norm", "--models", "video_vtr", "--verify")
    assert result.code == 1, result.err
    assert result.err.strip().splitlines() == [
        "error: video_vtr: qualification/records/dense_log_norm.json"
        f" [{yaml.safe_load((repo / 'techniques/dense_log_norm/technique.yml').read_text())['version']}@template-{(repo / 'template_repo/VERSION').read_text().strip()}]['dense_log_norm']"
        " FAILs dense_log_norm on this model (logloss worse by +1.56% (95% interval [+1.20%, +1.93%]), beyond the 0.50% bound);"
        ' leave it out, or give --force --reason "..."; nothing written'
    ]
    assert snapshot(repo) == before
    forced = run_smt(repo, "adopt", "dense_log_norm", "--models", "video_vtr", "--force", "--reason", "measured on our own data")
    assert forced.code == 0, forced.err
    assert "dense_log_norm" in _techniques(repo, "video_vtr")
    assert "measured on our own data; adopted by `video_vtr`" in (repo / "CHANGELOG.md").read_text()


def _pairs(root: Path) -> int:
    return sum(len(_techniques(root, path.parent.name)) for path in (root / "generated").glob("*/.copier-answers.yml"))


def test_status_matrix_and_adoption_per_release(repo: Path) -> None:
    _git(repo, "tag", "v0.1.0")
    pairs = _pairs(repo)
    _qualified(repo, "residual_mlp")
    assert run_smt(repo, "adopt", "residual_mlp", "--models", "feed_ctr,search_ads_ctr").code == 0
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "adopt residual_mlp")
    _git(repo, "tag", "v0.2.0")

    result = run_smt(repo, "status", "--json")
    assert result.code == 0, result.err
    status = json.loads(result.out)
    rows = {row["model"]: row for row in status["models"]}
    assert rows["feed_ctr"]["techniques"][-1] == "residual_mlp"
    assert all(row["in_sync"] and row["template_version"] == (repo / "template_repo/VERSION").read_text().strip() for row in rows.values())
    history = {entry["release"]: entry for entry in status["adoption_by_release"]}
    assert history["v0.1.0"]["pairs"] == pairs and history["v0.2.0"]["adopted"] == 2 and history["v0.2.0"]["pairs"] == pairs + 2

    text = run_smt(repo, "status").out
    assert f"v0.2.0: {pairs + 2} (+2 -0)" in text


def _technique_meta(root: Path, name: str) -> dict:
    return yaml.safe_load((root / "techniques" / name / "technique.yml").read_text())


def test_diff_since_of_a_four_model_adoption_reads_in_under_200_lines(repo: Path) -> None:
    """Spec diff, code hunks shown once for the models sharing them, capacity deltas, the
    technique's version, summary and reference; unaffected models are not listed as affected."""
    models = ["feed_ctr", "notification_open", "search_ads_ctr", "shopping_cvr"]
    assert run_smt(repo, "adopt", "residual_mlp", "--models", ",".join(models), "--force", "--reason", "review of the diff report").code == 0
    meta = _technique_meta(repo, "residual_mlp")

    result = run_smt(repo, "diff", "--since", "HEAD", "--format", "markdown")

    assert result.code == 0, result.err
    assert run_smt(repo, "diff", "--since", "HEAD", "--format", "markdown").out == result.out  # deterministic
    lines = result.out.splitlines()
    assert len(lines) < 200, len(lines)
    assert f"- **`residual_mlp`** unchanged, {meta['version']}: {meta['summary']}" in lines
    assert f"  - reference: {meta['reference']}" in lines
    assert "  - adopted by: " + ", ".join(f"`{model}`" for model in models) in lines
    rows = {line.split("`")[1]: line.split(" | ") for line in lines if line.startswith("| `")}
    assert sorted(rows) == models  # only the models whose code changed
    for row in rows.values():
        assert int(row[4].replace(",", "")) > 0 and float(row[5]) > 0  # Δparams, ΔMFLOPs: residual blocks add both
    assert "Unaffected: `app_install`, `marketplace`, `video_vtr`" in lines
    assert result.out.count("+- name: residual_mlp") == 1  # the spec hunk, once for all four
    assert result.out.count("+class ResidualBlock(nn.Module):") == 1  # the code hunk, once for all four
    assert "`<model>/model.py` in all affected models:" in lines

    data = json.loads(run_smt(repo, "diff", "--since", "HEAD", "--format", "json").out)
    shared = [hunk for hunk in data["shared_hunks"] if "+class ResidualBlock(nn.Module):" in hunk["diff"]]
    assert [hunk["models"] for hunk in shared] == [models]
    assert {model["model"]: "+- name: residual_mlp" in model["spec_diff"] for model in data["affected"]} == dict.fromkeys(models, True)
    assert data["techniques"][0] | {"qualification": None} == {
        "name": "residual_mlp", "status": "unchanged", "old_version": meta["version"], "new_version": meta["version"],
        "summary": meta["summary"], "reference": meta["reference"], "adopted_by": models, "dropped_by": [], "qualification": None,
    }


def test_diff_since_lists_models_a_new_adoption_does_not_apply_to_with_the_reason(repo: Path) -> None:
    assert run_smt(repo, "adopt", "mmoe", "--models", "shopping_cvr", "--force", "--reason", "review of the diff report").code == 0
    data = json.loads(run_smt(repo, "diff", "--since", "HEAD", "--format", "json").out)
    assert [model["model"] for model in data["affected"]] == ["shopping_cvr"]
    reasons = {item["model"]: item["reason"] for item in data["not_applicable"]}
    assert set(reasons) == {"feed_ctr", "notification_open", "search_ads_ctr", "video_vtr", "marketplace"}
    assert "needs at least 2 objectives" in reasons["feed_ctr"]
    assert "'mmoe' and 'ple' both replace extension point TaskTowers" in reasons["marketplace"]
