"""Model repos: `copier copy` from the SMT repo root gives what `smt generate` writes, and
`copier update` to a new release 3-way merges template and technique changes into local edits;
the merged model repo's own tests pass against the installed runtime (smt_runtime).

Everything runs for real in temporary folders: a git repo of this checkout's SMT sources with two
release tags, model repos created from it with copier, and the `smt` CLI of this checkout.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from copier._template import load_template_config

from repo_support import (
    ANSWERS,
    MODEL_PY,
    clean_env,
    commit_all,
    copier,
    docstring_line,
    git,
    make_release,
    make_smt_repo,
    smt,
    spec_of,
    write_spec,
)
from support import REPO, assert_model_tests_pass
from generator.render import render_model
from generator.sync import read_tree

MODEL = "feed_ctr"  # uses technique dcn_v2, whose patch the release changes
LOCAL_COMMENT = "        # local edit: residual form checked against the paper"


class Release:
    """The SMT repo with tags v0.1.0 and v0.2.0 and the lines the second release changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        template = (REPO / MODEL_PY).read_text()
        technique = (REPO / "techniques" / "dcn_v2" / "model.py").read_text()
        self.module_doc = docstring_line(template)  # changes cleanly
        self.mlp_doc = docstring_line(template, "class MLP(")  # changes here and, locally, in the model repo
        self.cross_doc = docstring_line(technique, "class CrossLayer(")  # a technique-patched line
        self.module_doc_new = self.module_doc.rstrip(".") + " (release 0.2.0)."
        self.mlp_doc_new = self.mlp_doc.rstrip(".") + ", as of release 0.2.0."
        self.cross_doc_new = self.cross_doc.rstrip(".") + " (dcn_v2, next version)."


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    root = make_smt_repo(tmp_path_factory.mktemp("smt") / "smt")
    git(root, "tag", "v0.1.0")
    made = Release(root)
    make_release(
        root,
        "0.2.0",
        template_edits={made.module_doc: made.module_doc_new, made.mlp_doc: made.mlp_doc_new},
        technique_edits={"dcn_v2": {made.cross_doc: made.cross_doc_new}},
    )
    return made


def _copy(release: Release, model: str, destination: Path, *extra: str) -> Path:
    spec = write_spec(destination.parent / f"{destination.name}.spec.yml", spec_of(release.root, model))
    copier(
        destination.parent,
        "copy",
        "--trust",
        "--defaults",
        "--quiet",
        "--data-file",
        str(spec),
        *extra,
        str(release.root),
        str(destination),
    )
    return destination


def _check_update(repo: Path) -> dict:
    return json.loads(copier(repo, "check-update", "--output-format", "json").out.strip().splitlines()[-1])


def test_root_and_template_folder_ask_the_same_questions() -> None:
    root = load_template_config(REPO / "copier.yml")
    folder = load_template_config(REPO / "template_repo" / "copier.yml")
    questions = [key for key in folder if not key.startswith("_")]
    assert "model_name" in questions and "techniques" in questions
    assert {key: root[key] for key in questions} == {key: folder[key] for key in questions}
    assert [key for key in root if not key.startswith("_")] == questions
    assert root["_subdirectory"] == "template_repo/" + folder["_subdirectory"]
    assert root["_answers_file"] == folder["_answers_file"] == ANSWERS


def test_copier_copy_from_the_repo_root_matches_smt_generate(release: Release, tmp_path: Path) -> None:
    """Latest tag by default, every example model, techniques included; `--data` works like a file."""
    models = sorted(path.parent.name for path in (release.root / "generated").glob(f"*/{ANSWERS}"))
    assert len(models) >= 2
    for model in models:
        made = _copy(release, model, tmp_path / model)
        assert read_tree(made) == read_tree(release.root / "generated" / model), model
        answers = yaml.safe_load((made / ANSWERS).read_text())
        assert answers["_commit"] == "v0.2.0"
        spec = spec_of(release.root, model)
        assert {key: answers[key] for key in spec} == spec  # plus Copier's defaults for unanswered questions
    assert "(release 0.2.0)" in (tmp_path / MODEL / MODEL / "model.py").read_text()

    data = [
        f"--data={key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in spec_of(release.root, MODEL).items()
    ]
    copier(
        tmp_path,
        "copy",
        "--trust",
        "--defaults",
        "--quiet",
        *data,
        str(release.root),
        str(tmp_path / "from_data"),
    )
    assert read_tree(tmp_path / "from_data") == read_tree(release.root / "generated" / MODEL)


def test_an_old_release_renders_as_smt_generate_wrote_it(release: Release, tmp_path: Path) -> None:
    """The merge base of an update: v0.1.0 rendered now equals v0.1.0's committed generated/."""
    made = _copy(release, MODEL, tmp_path / "old", "--vcs-ref", "v0.1.0")
    old_tree = tmp_path / "v0.1.0"
    git(release.root, "worktree", "add", "-q", "--detach", str(old_tree), "v0.1.0")
    try:
        assert read_tree(made) == read_tree(old_tree / "generated" / MODEL)
        assert '__template_version__ = "0.1.0"' in (made / MODEL / "__init__.py").read_text()
    finally:
        git(release.root, "worktree", "remove", "--force", str(old_tree))


def test_copier_copy_from_the_repo_root_validates_the_spec(release: Release, tmp_path: Path) -> None:
    spec = spec_of(release.root, MODEL)
    spec["techniques"] = [{"name": "no_such_technique"}]
    result = copier(
        tmp_path,
        "copy",
        "--trust",
        "--defaults",
        "--quiet",
        "--data-file",
        str(write_spec(tmp_path / "bad.yml", spec)),
        str(release.root),
        str(tmp_path / "out"),
        check=False,
    )
    assert result.code != 0
    assert "unknown technique 'no_such_technique'" in result.err
    assert not (tmp_path / "out").exists()


def _conflict_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(
        r"^<<<<<<< before updating\n(.*?)^=======\n(.*?)^>>>>>>> after updating\n", text, flags=re.M | re.S
    )


def _take(text: str, side: int) -> str:
    """Resolve every conflict block by keeping one side: 0 = the repo's, 1 = the new release's."""
    pattern = r"^<<<<<<< before updating\n(.*?)^=======\n(.*?)^>>>>>>> after updating\n"
    return re.sub(pattern, lambda match: match.group(side + 1), text, flags=re.M | re.S)


def test_copier_update_merges_a_release_into_local_edits(release: Release, tmp_path: Path) -> None:
    repo = _copy(release, MODEL, tmp_path / "model_repo", "--vcs-ref", "v0.1.0")
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "model repo from SMT v0.1.0")
    assert _check_update(repo) == {
        "update_available": True,
        "current_version": "0.1.0",
        "latest_version": "0.2.0",
    }

    # Local edits: a comment inside the technique-patched CrossLayer (no conflict expected), a
    # README note, and the MLP docstring line that the release also changes (a true conflict).
    model_py = repo / MODEL / "model.py"
    text = model_py.read_text()
    cross = text.index("class CrossLayer(")
    forward = text.index("    def forward(", cross)
    text = text[:forward] + text[forward:].replace("        return", LOCAL_COMMENT + "\n        return", 1)
    assert release.mlp_doc in text
    text = text.replace(release.mlp_doc, release.mlp_doc.rstrip(".") + " (local wording).", 1)
    model_py.write_text(text)
    readme = repo / "README.md"
    readme.write_text(readme.read_text() + "\nLocal note: owned by the feed ranking team.\n")
    commit_all(repo, "local edits")

    result = copier(repo, "update", "--trust", "--defaults", "--conflict", "inline")
    assert result.code == 0  # even though a conflict remains: hence `smt conflicts`
    # Quiet release: only the files the release's template and technique edits write, the package's
    # one template-version line, its smt-runtime pin and the answers file change (not every file's
    # header).
    touched = {line[3:] for line in git(repo, "status", "--porcelain").out.splitlines()}
    assert touched == {
        ANSWERS,
        "README.md",
        "pyproject.toml",
        f"{MODEL}/__init__.py",
        f"{MODEL}/config.py",
        f"{MODEL}/model.py",
    }, touched

    fresh = _copy(release, MODEL, tmp_path / "fresh")  # v0.2.0 rendered from scratch
    merged = {path: text for path, text in read_tree(repo).items() if not path.startswith(".git/")}
    expected = read_tree(fresh)
    assert merged.keys() == expected.keys()
    for path in sorted(set(expected) - {"README.md", f"{MODEL}/model.py"}):
        assert merged[path] == expected[path], path
    assert '__template_version__ = "0.2.0"' in merged[f"{MODEL}/__init__.py"]
    assert 'dependencies = ["smt-runtime==0.2.0"]' in merged["pyproject.toml"]  # the release's runtime
    assert merged["README.md"] == expected["README.md"] + "\nLocal note: owned by the feed ranking team.\n"
    assert yaml.safe_load((repo / ANSWERS).read_text())["_commit"] == "v0.2.0"

    # model.py: exactly one conflict, the true one; everything else merged, technique region included.
    model_text = merged[f"{MODEL}/model.py"]
    blocks = _conflict_blocks(model_text)
    assert len(blocks) == 1, model_text
    assert "(local wording)" in blocks[0][0] and "as of release 0.2.0" in blocks[0][1]
    resolved_to_release = _take(model_text, 1)
    assert resolved_to_release.replace(LOCAL_COMMENT + "\n", "", 1) == expected[f"{MODEL}/model.py"]
    assert (
        release.module_doc_new in model_text and release.cross_doc_new in model_text
    )  # template and technique
    assert LOCAL_COMMENT in model_text  # the local edit inside the technique-patched class
    new_version = yaml.safe_load((release.root / "techniques" / "dcn_v2" / "technique.yml").read_text())[
        "version"
    ]
    assert f"File model.py; techniques applied to this file: dcn_v2 {new_version}" in model_text

    # Copier exits 0, `smt conflicts` does not: it names the file, the lines and the unmerged path.
    line = model_text.splitlines().index("<<<<<<< before updating") + 1
    check = smt(repo, "conflicts")
    assert check.code == 1, check
    assert f"{MODEL}/model.py:{line}: leftover conflict marker '<<<<<<< before updating'" in check.out
    assert f"{MODEL}/model.py:{line + 2}: leftover conflict marker '======='" in check.out
    assert f"{MODEL}/model.py: unmerged" in check.out
    assert git(repo, "ls-files", "--unmerged").out.strip()

    # Resolve (keep the local wording), stage, commit: clean and up to date.
    model_py.write_text(_take(model_text, 0))
    git(repo, "add", "-A")
    ok = smt(repo, "conflicts", "--check-update")
    assert ok.code == 0, ok
    assert "conflicts: none" in ok.out and "up to date with SMT template 0.2.0" in ok.out
    commit_all(repo, "update to SMT v0.2.0")
    assert _check_update(repo) == {
        "update_available": False,
        "current_version": "0.2.0",
        "latest_version": "0.2.0",
    }
    # The model repo's own tests pass outside the SMT checkout: it holds only its model's code and
    # imports the rest from the installed runtime (this venv's; a model repo installs the version its
    # pyproject pins).
    assert_model_tests_pass(repo, clean_env())


def test_smt_conflicts_finds_markers_and_nothing_else(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("ignored.txt\n")
    (repo / "ignored.txt").write_text("<<<<<<< a\n=======\n>>>>>>> b\n")
    (repo / "README.md").write_text("Title\n=======\n\n<<<<<<<< eight is not a marker\n")
    (repo / "blob.bin").write_bytes(b"\0<<<<<<< a\n")
    (repo / "code.py").write_text(
        "x = 1\n<<<<<<< before updating\ny = 2\n=======\ny = 3\n>>>>>>> after updating\n"
    )
    commit_all(repo, "files")
    (repo / "untracked.txt").write_text("ok\n>>>>>>>\n")

    result = smt(repo, "conflicts")
    assert result.code == 1
    problems = [line for line in result.out.splitlines() if not line.startswith("conflicts:")]
    assert problems == [
        "code.py:2: leftover conflict marker '<<<<<<< before updating'",
        "code.py:4: leftover conflict marker '======='",
        "code.py:6: leftover conflict marker '>>>>>>> after updating'",
        "untracked.txt:2: leftover conflict marker '>>>>>>>'",
    ]
    assert "conflicts: 4 problem(s) in 2 file(s)" in result.out

    (repo / "code.py").write_text("x = 1\ny = 3\n")
    (repo / "untracked.txt").unlink()
    assert smt(repo, "conflicts").code == 0
    note = smt(repo, "conflicts", "--check-update")
    assert note.code == 0 and f"update check skipped: {repo}: no {ANSWERS}" in note.out
    (repo / ANSWERS).write_text(f"_commit: v0.1.0\n_src_path: {tmp_path / 'gone'}\nmodel_name: m\n")
    commit_all(repo, "answers of a model whose SMT repo is out of reach")
    unreachable = smt(repo, "conflicts", "--check-update")
    assert unreachable.code == 0, unreachable  # the update check never fails the command
    assert "update check skipped: copier check-update failed" in unreachable.out

    outside = smt(tmp_path, "conflicts", str(tmp_path))
    assert outside.code == 2
    assert outside.err.strip().splitlines() == [
        f"error: {tmp_path}: not inside a git work tree; run this in a model repo"
    ]


def _readme_copier_copy(fragment: str) -> list[str]:
    """The documentation's `copier copy` command that contains ``fragment``, split into words
    (README.md and the site's pages under docs/, where the model-repo commands live)."""
    readme = "\n".join(path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))])
    commands = [line.strip().strip("`") for line in re.findall(r"`?(copier copy [^`\n#]*)", readme) if fragment in line]
    assert len(commands) == 1, commands
    return shlex.split(commands[0])


def _partial_spec(path: Path) -> Path:
    """feed_ctr's spec without its optional keys (description, hyperparameters, data, synthetic)."""
    spec = {key: value for key, value in spec_of(REPO, MODEL).items() if key in ("model_name", "objectives", "sparse_features", "dense_features", "serving", "techniques")}
    return write_spec(path, spec)


def test_readme_copier_copy_from_the_template_folder_works_as_written(tmp_path: Path) -> None:
    """The README's template-folder command, run as written on a spec that omits optional keys."""
    words = _readme_copier_copy("template_repo/")
    spec = _partial_spec(tmp_path / "SPEC.yml")
    replaced = {"SPEC.yml": str(spec), "template_repo/": str(REPO / "template_repo"), "my_model/": str(tmp_path / "my_model")}
    copier(tmp_path, *[replaced.get(word, word) for word in words[1:]])
    assert read_tree(tmp_path / "my_model") == render_model(REPO, yaml.safe_load(spec.read_text()), MODEL)


def test_readme_copier_copy_of_a_release_works_and_its_answers_header_says_copier_update(release: Release, tmp_path: Path) -> None:
    """The README's model-repo command works as written, and the command its answers file names
    changes an answer and regenerates the model (there is no `smt generate` in a model repo)."""
    words = _readme_copier_copy('"$SMT_REPO"')
    spec = _partial_spec(tmp_path / "feed_ctr.yml")
    replaced = {"feed_ctr.yml": str(spec), "$SMT_REPO": str(release.root), "feed_ctr": str(tmp_path / "feed_ctr")}
    copier(tmp_path, *[replaced.get(word, word) for word in words[1:]])
    repo = tmp_path / "feed_ctr"
    header = (repo / ANSWERS).read_text().split("\n_", 1)[0]
    assert "smt generate" not in header
    command = re.search(r"`(copier update [^`]+)`", header)
    assert command, header
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "feed_ctr from SMT")

    words = [word.replace("KEY=VALUE", "description=Clicks in the feed.") for word in shlex.split(command.group(1))]
    copier(repo, *words[1:])
    assert "Clicks in the feed." in (repo / "README.md").read_text()
    assert yaml.safe_load((repo / ANSWERS).read_text())["_commit"] == "v0.2.0"  # regenerated, not moved


def _passing_record(smt_repo: Path, technique: str, template_version: str) -> None:
    """A passing verdict of ``technique`` at ``template_version`` in the SMT repo's records (by hand:
    these tests are about what the commands do with a verdict, not about its numbers)."""
    version = yaml.safe_load((smt_repo / "techniques" / technique / "technique.yml").read_text())["version"]
    path = smt_repo / "qualification" / "records" / f"{technique}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"passed": True, "reasons": [], "params": {}, "models": [MODEL], "seeds": 2, "steps": 300, "mean_gain": 0.01, "report": "r"}
    path.write_text(json.dumps({f"{version}@template-{template_version}": {technique: record}}))


def test_promote_in_a_git_repo_commits_and_tags_the_release_and_copier_takes_it(tmp_path: Path) -> None:
    """A release is a tag: promote commits exactly what it wrote and tags it v<VERSION> (annotated);
    `copier copy` then takes that tag and shows that version. A tag that exists already stops the
    next release before anything is written."""
    root = make_smt_repo(tmp_path / "smt", models=("notification_open",))
    git(root, "tag", "-a", "v0.1.0", "-m", "SMT template 0.1.0")
    _passing_record(root, "residual_mlp", "0.1.0")
    commit_all(root, "qualified residual_mlp")
    result = smt(root, "promote", "residual_mlp", root=root)
    assert result.code == 0, result.err
    assert "release: committed and tagged v0.2.0" in result.out
    assert git(root, "status", "--porcelain").out == ""  # everything it wrote is in the release commit
    assert git(root, "cat-file", "-t", "v0.2.0").out.strip() == "tag"  # annotated
    assert git(root, "rev-parse", "v0.2.0^{commit}").out == git(root, "rev-parse", "HEAD").out
    assert git(root, "show", "v0.2.0:template_repo/VERSION").out == "0.2.0\n"
    assert "Promoted `residual_mlp`" in git(root, "show", "v0.2.0:CHANGELOG.md").out
    spec = write_spec(tmp_path / "spec.yml", spec_of(root, "notification_open"))
    copier(tmp_path, "copy", "--trust", "--defaults", "--quiet", "--data-file", str(spec), str(root), str(tmp_path / "model"))
    assert yaml.safe_load((tmp_path / "model" / ANSWERS).read_text())["_commit"] == "v0.2.0"
    assert '__template_version__ = "0.2.0"' in (tmp_path / "model" / "notification_open" / "__init__.py").read_text()
    git(tmp_path / "model", "init", "-q", "-b", "main")
    commit_all(tmp_path / "model", "model repo")
    assert _check_update(tmp_path / "model")["current_version"] == "0.2.0"

    git(root, "tag", "-a", "v0.3.0", "-m", "a release made by hand")
    _passing_record(root, "fibinet", "0.2.0")
    commit_all(root, "qualified fibinet")
    before = read_tree(root / "generated")
    refused = smt(root, "promote", "fibinet", root=root)
    assert refused.code == 2 and refused.err.strip().startswith("error: tag v0.3.0 already exists"), refused.err
    assert read_tree(root / "generated") == before and (root / "template_repo" / "VERSION").read_text() == "0.2.0\n"


def test_adopt_and_drop_in_a_model_repo_edit_its_answers_through_copier_update(release: Release, tmp_path: Path) -> None:
    """In a model repo made from a `git+file://` URL, `smt adopt`/`smt drop` change its techniques
    answer by `copier update` at its release (no list restated by hand), behind the same gate as in
    the SMT repo, reading the records of that release."""
    smt_repo = tmp_path / "smt"
    git(tmp_path, "clone", "-q", str(release.root), str(smt_repo))
    _passing_record(smt_repo, "residual_mlp", "0.3.0")
    make_release(smt_repo, "0.3.0")
    spec = write_spec(tmp_path / "spec.yml", spec_of(smt_repo, MODEL))
    repo = tmp_path / "model_repo"
    copier(tmp_path, "copy", "--trust", "--defaults", "--quiet", "--data-file", str(spec), f"git+file://{smt_repo}", str(repo))
    answers = yaml.safe_load((repo / ANSWERS).read_text())
    assert answers["_src_path"] == f"git+file://{smt_repo}" and answers["_commit"] == "v0.3.0"
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "model repo")
    original = read_tree(repo)

    refused = smt(repo, "adopt", "grad_clip")
    assert refused.code == 1, refused
    assert refused.err.strip().splitlines()[-1].startswith("error: grad_clip: no passing qualification record for grad_clip ")
    assert "at template 0.3.0 (qualification/records/grad_clip.json [" in refused.err
    assert git(repo, "status", "--porcelain").out == ""

    adopted = smt(repo, "adopt", "residual_mlp")
    assert adopted.code == 0, adopted
    assert f"{MODEL}: adopted residual_mlp (copier update at SMT release v0.3.0)" in adopted.out
    techniques = [use["name"] for use in yaml.safe_load((repo / ANSWERS).read_text())["techniques"]]
    assert techniques == [use["name"] for use in spec_of(smt_repo, MODEL)["techniques"]] + ["residual_mlp"]
    expected_spec = spec_of(smt_repo, MODEL)
    expected_spec["techniques"] = yaml.safe_load((repo / ANSWERS).read_text())["techniques"]
    fresh = _copy(Release(smt_repo), MODEL, tmp_path / "fresh")  # what copier copy gives for the new spec
    write_spec(tmp_path / "fresh.spec.yml", expected_spec)
    copier(tmp_path, "copy", "--trust", "--defaults", "--quiet", "--overwrite", "--data-file", str(tmp_path / "fresh.spec.yml"), str(smt_repo), str(fresh))
    merged = {path: text for path, text in read_tree(repo).items() if not path.startswith(".git/")}
    assert {p: t for p, t in merged.items() if p != ANSWERS} == {p: t for p, t in read_tree(fresh).items() if p != ANSWERS}
    commit_all(repo, "adopt residual_mlp")

    dropped = smt(repo, "drop", "residual_mlp")
    assert dropped.code == 0, dropped
    assert {p: t for p, t in read_tree(repo).items() if not p.startswith(".git/")} == {p: t for p, t in original.items() if not p.startswith(".git/")}
    commit_all(repo, "drop residual_mlp")

    conflicting = smt(repo, "adopt", "fibinet", "--force", "--reason", "tried offline on our logs")
    assert conflicting.code == 2 and len(conflicting.err.strip().splitlines()) == 1, conflicting
    assert conflicting.err.startswith(f"error: {MODEL}: ") and "techniques 'dcn_v2' and 'fibinet' both replace" in conflicting.err
    assert git(repo, "status", "--porcelain").out == ""
    forced = smt(repo, "adopt", "grad_clip", "--force", "--reason", "tried offline on our logs")
    assert forced.code == 0, forced
    assert "(`--force`): tried offline on our logs" in (repo / "CHANGELOG.md").read_text()
    verify = smt(repo, "adopt", "residual_mlp", "--verify")
    assert verify.code == 2 and verify.err.strip().startswith("error: --verify trains in the SMT repository"), verify
    dirty = smt(repo, "adopt", "residual_mlp")
    assert dirty.code == 2 and "uncommitted changes; `copier update` needs a clean work tree" in dirty.err, dirty
    other = smt(repo, "drop", "grad_clip", "--models", "video_vtr")
    assert other.code == 2 and f"a model repo holds one model ({MODEL})" in other.err, other

