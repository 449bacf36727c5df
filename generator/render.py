"""render_model: a model's spec -> its generated files, through Copier's Jinja environment and the
template's techniques.

The template is rendered with the very Jinja environment Copier builds for ``template_repo/``
(``copier.Worker.jinja_env``: its envops, ``_jinja_extensions`` and the template's own
``smt_jinja`` extension, which applies the techniques), the same context variables and the same
path rules, built once per process instead of once per model: ``copier copy`` runs that setup,
asks its questions and writes a folder for every model, about a second each. The files and their
text come from the one template, so ``copier copy`` and ``smt generate`` give the same bytes
(``tests/test_render.py`` and ``tests/test_scale.py`` check it on every example model).
In-process rendering also shares the engine's memo across models: files that render to the same
text (or the same shape, see ``engine/shapes.py``) are patched and formatted once.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path, PurePath
from typing import Any

import yaml

from . import engine
from .engine import SmtError
from .engine.paths import TEMPLATE_DIR
from .fleet import ANSWERS_FILE


RenderedTree = dict[str, str]  # path relative to the model folder -> file text


def check_spec(root: Path, answers: dict[str, Any], model: str, model_dir: Path | None = None) -> tuple[engine.AppliedTechnique, ...]:
    """Validate a spec and plan its techniques without rendering; raise SmtError on a problem."""
    engine.validate_spec(answers, model)
    return engine.plan_for(root, answers, model_dir)[1]


class TemplateRenderer:
    """Copier's Jinja environment, question defaults and file list for one template folder."""

    def __init__(self, template_dir: Path) -> None:
        from copier._main import Worker  # noqa: PLC0415 - Copier takes a while to import; only renders need it

        self.template_dir = template_dir
        worker = Worker(src_path=str(template_dir), dst_path=Path("."), defaults=True, unsafe=True, quiet=True)
        template = worker.template
        self.env = worker.jinja_env
        self.suffix = template.templates_suffix
        self.answers_file = str(template.answers_relpath)
        self.questions = dict(template.questions_data)
        self.root = template.local_abspath / template.subdirectory
        self.loader_prefix = Path(template.subdirectory).as_posix().strip("/.")
        # Copier renders exclusion patterns with Jinja; this template's have none (and the identity
        # tests would show a difference if one were added).
        self._exclude = worker._path_matcher(template.exclude)
        self.sources = self._scan()
        self._compiled: dict[str, Any] = {}

    def _scan(self) -> list[tuple[str, bool]]:
        """Template files relative to the subdirectory, in Copier's order, with whether each is Jinja."""
        found = []
        for folder, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in sorted(files):
                relative = (Path(folder) / name).relative_to(self.root).as_posix()
                is_template = bool(self.suffix) and name.endswith(self.suffix)
                if not is_template and (self.root / f"{relative}{self.suffix}").exists() and self.suffix:
                    continue  # Copier renders the templated sibling instead
                found.append((relative, is_template))
        return found

    def _defaults(self, answers: dict[str, Any]) -> dict[str, Any]:
        """Answers with Copier's defaults for unanswered questions, cast as Copier casts them."""
        combined = {}
        for name, question in self.questions.items():
            kind = question.get("type", "yaml") if isinstance(question, dict) else "yaml"
            if name in answers:
                value = answers[name]
            elif isinstance(question, dict) and "default" in question:
                value = question["default"]
                if isinstance(value, str):
                    value = self.env.from_string(value).render(**answers)
            else:
                continue
            if kind in ("yaml", "json") and isinstance(value, str):
                value = yaml.safe_load(value)
            elif kind == "str" and value is not None:
                value = str(value)
            combined[name] = value
        for name, value in answers.items():
            combined.setdefault(name, value)
        return combined

    def _string(self, text: str, context: dict[str, Any]) -> str:
        compiled = self._compiled.get(text)
        if compiled is None:
            compiled = self._compiled[text] = self.env.from_string(text)
        return compiled.render(**context)

    def render(self, answers: dict[str, Any], destination: Path) -> RenderedTree:
        """Every file Copier would write into ``destination`` for ``answers`` (the answers file excluded)."""
        combined = self._defaults(answers)
        conf = {
            "src_path": PurePath(self.template_dir),
            "dst_path": PurePath(destination),
            "answers_file": PurePath(self.answers_file),
            "sep": os.sep,
            "defaults": True,
            "unsafe": True,
            "quiet": True,
        }
        context = {
            **combined,
            "_copier_answers": {key: value for key, value in combined.items() if not key.startswith("_")},
            "_copier_conf": conf,
            "_folder_name": destination.name,
            "_copier_python": sys.executable,
            "_copier_phase": _render_phase(),
        }
        tree: RenderedTree = {}
        for relative, is_template in self.sources:
            parts = [self._string(part, context) for part in relative.split("/")]
            if not all(parts):
                continue  # Copier skips a path with a part rendered empty
            if is_template:
                parts[-1] = parts[-1][: -len(self.suffix)] if parts[-1].endswith(self.suffix) else parts[-1]
            path = "/".join(parts)
            if path == self.answers_file or self._exclude(Path(path)):
                continue
            try:
                if is_template:
                    name = f"{self.loader_prefix}/{relative}" if self.loader_prefix else relative
                    tree[path] = self.env.get_template(name).render(**context)
                else:
                    tree[path] = (self.root / relative).read_text()
            except Exception as exc:  # noqa: BLE001 - any failure of a template file is the template's
                raise template_error(exc, self.root / relative, self.template_dir.parent) from None
        return dict(sorted(tree.items()))


def template_error(exc: BaseException, file: Path, root: Path) -> SmtError:
    """One line naming the template file (and line) that failed to render, and why.

    SmtErrors (a technique's or the spec's problem, maybe from the template's private engine copy)
    keep their message; Jinja syntax errors name the line Jinja reports; anything raised while
    rendering names the deepest template line on the traceback (Jinja rewrites its frames so that
    they show template files and lines)."""
    if getattr(exc, "is_smt_error", False):
        if "is not valid Python" in str(exc):  # the rendered text of this template file
            return SmtError(f"{_shown(file, root)}{_template_line_of(str(exc), file)}: renders {exc}")
        return SmtError(str(exc))
    import jinja2  # noqa: PLC0415 - Copier's dependency, loaded by the renderer already

    def shown(path: str | Path) -> str:
        return _shown(path, root)

    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = f"{shown(exc.filename or file)}:{exc.lineno}"
        return SmtError(f"{where}: template syntax error ({_one_line(exc.message or str(exc))}); fix the template")
    where = shown(file)
    traceback = exc.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        if filename.endswith(".jinja") or filename == str(file):
            where = f"{shown(filename)}:{traceback.tb_lineno}"
        traceback = traceback.tb_next
    if isinstance(exc, UnicodeDecodeError):
        return SmtError(f"{where}: not UTF-8 text (undecodable byte at offset {exc.start}); template files must be UTF-8")
    return SmtError(f"{where}: rendering failed ({type(exc).__name__}: {_one_line(str(exc))}); fix the template")


def _template_line_of(message: str, file: Path) -> str:
    """":N" when the invalid line the message quotes appears on exactly one line N of the template."""
    match = re.search(r"is not valid Python \([^()]*: ('.*'|\".*\")\)", message)
    if match is None:
        return ""
    try:
        quoted = ast.literal_eval(match.group(1))
        lines = file.read_text().splitlines()
    except (ValueError, SyntaxError, OSError, UnicodeDecodeError):
        return ""
    found = [number for number, line in enumerate(lines, 1) if quoted and line.strip() == quoted]
    return f":{found[0]}" if len(found) == 1 else ""


def _shown(path: str | Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render_phase() -> Any:
    from copier._types import Phase  # noqa: PLC0415

    return Phase.RENDER


_RENDERERS: dict[Path, tuple[tuple[tuple[str, int, int], ...], TemplateRenderer]] = {}


def _template_stamp(template_dir: Path) -> tuple[tuple[str, int, int], ...]:
    stamp = []
    for folder, _, files in os.walk(template_dir):
        for name in files:
            info = os.stat(os.path.join(folder, name))
            stamp.append((os.path.join(folder, name), info.st_size, info.st_mtime_ns))
    return tuple(sorted(stamp))


def template_renderer(root: Path) -> TemplateRenderer:
    """The renderer of ``root``'s template, rebuilt when any template file changes."""
    template_dir = (root / TEMPLATE_DIR).resolve()
    stamp = _template_stamp(template_dir)
    cached = _RENDERERS.get(template_dir)
    if cached is None or cached[0] != stamp:
        cached = _RENDERERS[template_dir] = (stamp, TemplateRenderer(template_dir))
    return cached[1]


NO_MODEL_DIR = Path("/nonexistent/smt-model")  # a destination without local techniques


def render_model(root: Path, answers: dict[str, Any], model: str, model_dir: Path | None = None) -> RenderedTree:
    """Render one model from the template in ``root``'s working tree.

    ``model_dir`` is the model's folder, whose ``local_techniques/`` (if any) are applied too; the
    result excludes the inputs (the answers file and local techniques).
    """
    with engine.sources_pinned():  # template, techniques and local techniques: checked once per model
        check_spec(root, answers, model, model_dir)
        data = {key: value for key, value in answers.items() if not key.startswith("_")}
        destination = model_dir.resolve() if model_dir is not None else NO_MODEL_DIR
        try:
            tree = template_renderer(root).render(data, destination)
        except Exception as exc:  # SmtError may come from a private engine copy
            if getattr(exc, "is_smt_error", False):
                raise SmtError(str(exc)) from None
            raise
    tree.pop(ANSWERS_FILE, None)
    return tree
