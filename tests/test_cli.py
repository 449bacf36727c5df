"""The smt commands on a private copy of the repository, driven as a user would: real CLI, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from support import HANG_TIMEOUT, REPO, run_smt, snapshot


def test_repository_fleet_is_in_sync() -> None:
    result = run_smt(REPO, "check")
    assert result.code == 0, result.out + result.err
    assert "model(s) in sync" in result.out


def test_fleet_has_six_models_with_varied_specs() -> None:
    models = sorted(p.parent.name for p in (REPO / "generated").glob("*/.copier-answers.yml"))
    assert len(models) >= 6, models


def test_generate_twice_changes_nothing(repo_copy: Path) -> None:
    first = run_smt(repo_copy, "generate")
    assert first.code == 0, first.err
    before = snapshot(repo_copy)
    second = run_smt(repo_copy, "generate")
    assert second.code == 0, second.err
    assert "0 model(s) updated" in second.out
    assert snapshot(repo_copy) == before


def test_check_catches_a_hand_edit_and_generate_repairs_it(repo_copy: Path) -> None:
    edited = repo_copy / "generated/feed_ctr/feed_ctr/model.py"
    pristine = edited.read_bytes()
    edited.write_text(edited.read_text().replace("class OverArch", "class OverArch  # tweaked", 1))

    result = run_smt(repo_copy, "check")

    assert result.code == 1
    assert "generated/feed_ctr/feed_ctr/model.py: modified" in result.out
    assert "smt generate" in result.out
    assert result.out.count(": modified") == 1  # only the edited file

    diff = run_smt(repo_copy, "diff", "feed_ctr")
    assert diff.code == 0
    assert "-class OverArch  # tweaked" in diff.out and "+class OverArch(nn.Module):" in diff.out

    assert run_smt(repo_copy, "generate", "feed_ctr").code == 0
    assert edited.read_bytes() == pristine
    assert run_smt(repo_copy, "check").code == 0


def test_check_catches_a_deleted_and_an_extra_file(repo_copy: Path) -> None:
    (repo_copy / "generated/notification_open/notification_open/__main__.py").unlink()
    (repo_copy / "generated/notification_open/notes.txt").write_text("stray\n")
    result = run_smt(repo_copy, "check", "notification_open")
    assert result.code == 1
    assert "generated/notification_open/notification_open/__main__.py: added" in result.out
    assert "generated/notification_open/notes.txt: removed" in result.out


def test_check_catches_a_technique_change_in_every_model_using_it(repo_copy: Path) -> None:
    patch = repo_copy / "techniques/dcn_v2/model.py"
    patch.write_text(patch.read_text().replace("class InteractionArch(nn.Module):", "class InteractionArch(nn.Module):  # v2", 1))
    users = [
        p.parent.name
        for p in (repo_copy / "generated").glob("*/.copier-answers.yml")
        if "dcn_v2" in p.read_text()
    ]
    assert users

    result = run_smt(repo_copy, "check")

    assert result.code == 1
    for model in users:
        assert f"generated/{model}/{model}/model.py: modified" in result.out
    assert "notification_open" not in result.out


def test_check_catches_a_template_change(repo_copy: Path) -> None:
    template = repo_copy / "template_repo/template/{{ model_name }}/__main__.py.jinja"
    template.write_text(template.read_text().replace('"""', '"""Changed. ', 1))
    result = run_smt(repo_copy, "check")
    assert result.code == 1
    assert result.out.count("/__main__.py: modified") == len(list((repo_copy / "generated").glob("*/.copier-answers.yml")))


def test_training_runs_in_a_model_folder_survive_check_and_generate(repo_copy: Path) -> None:
    model_dir = repo_copy / "generated/feed_ctr"
    trained = subprocess.run(
        [sys.executable, "-m", "feed_ctr", "train", "--steps=2", "--no-progress", "--run-dir=runs/first"],
        cwd=model_dir,
        env={**os.environ, "PYTHONPATH": str(model_dir)},
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT,
    )
    assert trained.returncode == 0, trained.stderr
    metrics = (model_dir / "runs/first/metrics.json").read_bytes()
    check = run_smt(repo_copy, "check", "feed_ctr")
    assert check.code == 0, check.out  # runs are outputs, not generated code
    template = repo_copy / "template_repo/template/{{ model_name }}/__main__.py.jinja"
    template.write_text(template.read_text().replace('"""', '"""Changed. ', 1))
    assert run_smt(repo_copy, "generate", "feed_ctr").code == 0
    assert "Changed." in (model_dir / "feed_ctr/__main__.py").read_text()
    assert (model_dir / "runs/first/metrics.json").read_bytes() == metrics
    assert (model_dir / "runs/first/checkpoint.pt").is_file()


def test_spec_change_regenerates_only_that_model(repo_copy: Path) -> None:
    spec = repo_copy / "generated/search_ads_ctr/.copier-answers.yml"
    spec.write_text(spec.read_text().replace("cardinality: 6000", "cardinality: 7000"))
    check = run_smt(repo_copy, "check")
    assert check.code == 1
    assert sorted(line.split(":")[0] for line in check.out.splitlines() if ": modified" in line) == [
        "generated/search_ads_ctr/README.md",
        "generated/search_ads_ctr/search_ads_ctr/config.py",
    ]
    result = run_smt(repo_copy, "generate")
    assert result.code == 0, result.err
    assert "search_ads_ctr: 2 file(s) changed" in result.out
    assert "1 model(s) updated" in result.out
    assert "cardinality=7000" in (repo_copy / "generated/search_ads_ctr/search_ads_ctr/config.py").read_text()


def test_techniques_lists_summaries_and_users() -> None:
    result = run_smt(REPO, "techniques")
    assert result.code == 0, result.err
    for name in ("dcn_v2", "mmoe", "residual_mlp"):
        assert name in result.out
    users = sorted(
        path.parent.name
        for path in (REPO / "generated").glob("*/.copier-answers.yml")
        if any(use["name"] == "mmoe" for use in yaml.safe_load(path.read_text())["techniques"])
    )
    lines = result.out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("mmoe "))
    used_by = next(line for line in lines[start:] if line.startswith("    used by: "))
    assert used_by == f"    used by: {', '.join(users) or 'no models yet'}"


def test_every_generated_file_has_the_header() -> None:
    for path in (REPO / "generated").rglob("*"):
        if path.is_file() and path.name != ".copier-answers.yml" and "__pycache__" not in path.parts:
            head = path.read_text().splitlines()[0]
            assert "Generated by SMT - do not edit by hand." in head, path


def test_generator_does_not_need_torch() -> None:
    code = (
        "import sys, generator.cli, generator.render, generator.engine\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_every_command_reports_errors_through_the_one_handler() -> None:
    from generator.cli import app  # noqa: PLC0415
    from generator.cli._app import handle_errors  # noqa: PLC0415

    typers = [app, *(group.typer_instance for group in app.registered_groups)]
    callbacks = [info.callback for typer_app in typers for info in typer_app.registered_commands]
    callbacks += [typer_app.registered_callback.callback for typer_app in typers if typer_app.registered_callback]
    assert len(callbacks) > 15
    wrapper = handle_errors(lambda: None).__code__  # every handled command runs this code
    unhandled = [f.__name__ for f in callbacks if f.__code__ is not wrapper]
    assert not unhandled, f"commands without handle_errors: {unhandled}"


def test_cli_modules_never_import_their_package() -> None:
    """Command modules import _app/_workspace or a sibling, never generator.cli itself: no cycle."""
    import ast  # noqa: PLC0415

    for path in sorted((REPO / "generator/cli").glob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.level == 1 and node.module is None), f"{path.name} imports its package"
                assert node.module != "generator.cli" and not (node.level == 2 and node.module == "cli"), path.name


def test_check_capacity_names_models_over_budget(repo_copy: Path) -> None:
    spec = repo_copy / "generated/notification_open/.copier-answers.yml"
    data = yaml.safe_load(spec.read_text())
    # Above its embedding tables (323,744 parameters; a budget below them is refused at
    # validation), below the whole model (348,328).
    data["serving"]["max_params"] = 330_000
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    assert run_smt(repo_copy, "generate", "notification_open").code == 0
    result = run_smt(repo_copy, "check", "--capacity", "notification_open")
    assert result.code == 1
    assert "notification_open: 348,328 parameters" in result.out and "over its budget of 330,000" in result.out
    assert run_smt(repo_copy, "check", "--capacity", "feed_ctr").code == 0


def test_techniques_show_lists_alternatives_and_advises_conflicts() -> None:
    """Techniques replacing the same extension point are listed as not combinable, with the fix."""
    result = run_smt(REPO, "techniques", "show", "mmoe")
    assert result.code == 0, result.err
    line = next(line for line in result.out.splitlines() if line.startswith("cannot be combined with: "))
    assert "ple (both replace model.py:TaskTowers)" in line
    assert "dcn_v2" not in line  # a different extension point
    assert "declare `conflicts: [ple]` in techniques/mmoe/technique.yml" in result.out


def test_status_shows_full_technique_names() -> None:
    result = run_smt(REPO, "status")
    assert result.code == 0, result.err
    header = result.out.splitlines()[0].split()
    assert "uncertainty_weighting" in header and "lr_warmup_cosine" in header
    row = next(line for line in result.out.splitlines() if line.startswith("app_install "))
    column = result.out.splitlines()[0].index("uncertainty_weighting")
    assert row[column] == "x"  # app_install uses it: the mark sits under the full name


def test_where_matching_no_model_says_so(repo_copy: Path) -> None:
    before = snapshot(repo_copy)
    result = run_smt(repo_copy, "adopt", "dcn_v2", "--where", "num_objectives > 7")
    assert result.code == 2
    count = len(list((repo_copy / "generated").glob("*/.copier-answers.yml")))
    assert result.err.strip().splitlines() == [
        f"error: --where 'num_objectives > 7' matches none of the {count} model(s); nothing to do (see `smt status` for each model's techniques)"
    ]
    assert snapshot(repo_copy) == before


def _git_repo(root: Path) -> Path:
    for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fleet")):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def test_check_names_the_change_behind_drift_and_a_hand_edit_only_when_it_is_one(repo_copy: Path) -> None:
    """A technique change, a template change and a hand edit are each named as what they are."""
    root = _git_repo(repo_copy)
    patch = root / "techniques/mmoe/model.py"
    patch.write_text(patch.read_text().replace("class TaskTowers(nn.Module):", "class TaskTowers(nn.Module):  # v2", 1))
    template = root / "template_repo/template/{{ model_name }}/__main__.py.jinja"
    template.write_text(template.read_text().replace('"""', '"""Changed. ', 1))
    edited = root / "generated/feed_ctr/feed_ctr/train.py"
    edited.write_text(edited.read_text() + "# tweaked\n")

    result = run_smt(root, "check")

    assert result.code == 1
    lines = result.out.splitlines()
    assert "generated/app_install/app_install/model.py: modified, caused by technique mmoe changed (techniques/mmoe/model.py)" in lines
    assert "generated/feed_ctr/feed_ctr/__main__.py: modified, caused by the template changed (template_repo/template/{{ model_name }}/__main__.py.jinja)" in lines
    assert "generated/feed_ctr/feed_ctr/train.py: modified, caused by a hand edit (it differs from its committed text and none of its inputs changed)" in lines
    assert sum("hand edit" in line for line in lines if line.startswith("generated/")) == 1
    assert "(1 hand-edited)" in lines[-1]
