"""The render cache in ``<root>/.smt/cache`` (git-ignored): content-addressed, so it is never stale.

Two kinds of entries, each under the hash of everything that decides it:

- ``files/``: one finished file (patched, formatted, with its header) per (engine code, libcst and
  black versions, template version and extension points, target, rendered text, fingerprints and
  params of the techniques touching it): the engine's ``FinishStore``.
- ``models/``: per model, the SHA-256 of each file it renders to, under ``model_key``: the
  generator's code, the versions of Python, Copier, Jinja2, pydantic, PyYAML, libcst and black,
  every file of ``template_repo/``, the spec's bytes, the model's local techniques and every file
  of each shared technique the spec names.

A model whose key has an entry and whose folder hashes to it is in sync without rendering; any
other model is rendered (and the entry written). An entry is only ever written from a render, and
a key changes with any input, so the cache can make ``smt check`` faster but never change its
answer. Deleting ``.smt/`` is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from .engine.paths import LOCAL_TECHNIQUES_DIR, TECHNIQUES_DIR, TEMPLATE_DIR
from .fleet import ANSWERS_FILE, load_answers
from .sync import LinkedFolder, file_digest, tree_files

CACHE_DIR = Path(".smt") / "cache"  # under state_dir(root)
TOOLS = ("copier", "jinja2", "pydantic", "pyyaml", "libcst", "black")
_SKIP_PARTS = frozenset({"__pycache__", ".pytest_cache"})
GENERATOR_DIR = Path(__file__).resolve().parent
# Parsed specs by SHA-256, in the file's key order (the earlier "specs.json" held them with
# sorted keys, which `smt adopt` then wrote back: a new name, so such entries are never read).
SPECS_FILE = "answers.json"


def _tool_versions() -> str:
    versions = [f"python {sys.version}"]
    for tool in TOOLS:
        try:
            versions.append(f"{tool} {version(tool)}")
        except PackageNotFoundError:
            versions.append(f"{tool} missing")
    return "; ".join(versions)


def hash_folder(directory: Path, digest: Any | None = None) -> Any:
    """Update (or start) a SHA-256 with every file under ``directory``: relative paths and bytes."""
    digest = digest if digest is not None else hashlib.sha256()
    if not directory.is_dir():
        digest.update(b"<absent>")
        return digest
    for folder, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_PARTS)
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = Path(folder) / name
            digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


STATE_DIR = ".smt"


def state_dir(root: Path) -> Path:
    """``<root>/.smt``, created with a ``.gitignore`` of its own (as pytest does for its cache), so
    the cache and the lock never show up in ``git status``, whatever the repository ignores."""
    directory = root / STATE_DIR
    ignore = directory / ".gitignore"
    if not ignore.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        ignore.write_text("# Created by smt: its render cache and lock, never committed.\n*\n")
    return directory


def _write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename: readers (other processes) see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def technique_names(answers: Mapping[str, Any]) -> list[str]:
    """The shared techniques a spec names (sorted; anything malformed is left to validation).

    Not ``fleet.ModelAnswers(...).technique_names``: that validates the spec with pydantic, which
    costs more than the whole no-op ``smt check`` this key exists to keep fast (about 0.4 s for the
    example fleet against 0.4 s for the check), and it raises on a malformed spec, whose error must
    come from the render (naming model and field), not from computing a cache key.
    """
    names = set()
    uses = answers.get("techniques")
    if isinstance(uses, Iterable) and not isinstance(uses, (str, bytes, Mapping)):
        for use in uses:
            if isinstance(use, Mapping) and isinstance(use.get("name"), str):
                names.add(use["name"])
    return sorted(names)


class RenderCache:
    """The cache of one SMT repository; ``enabled=False`` turns every lookup into a miss."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = root
        self.directory = root / CACHE_DIR
        self._prepared = False
        self.enabled = enabled
        self._technique_hashes: dict[str, str] = {}
        self._base: str | None = None
        self._specs: dict[str, str] | None = None  # spec SHA-256 -> its parsed answers as JSON
        self._spec_sha: dict[Path, str] = {}
        self._folders: dict[str, Any] | None = None  # model folder -> recorded file stats and hashes
        self._dirty: set[str] = set()
        self._rehashed = True  # whether the last folder_digests had to hash a file again

    def _prepare(self) -> None:
        if not self._prepared:
            state_dir(self.root)
            self._prepared = True

    # -- finished files (the engine's FinishStore) -------------------------------------------
    def get(self, key: str) -> str | None:
        if not self.enabled:
            return None
        try:
            return (self.directory / "files" / key[:2] / key).read_text()
        except (OSError, UnicodeDecodeError):
            return None

    def put(self, key: str, text: str) -> None:
        if self.enabled:
            try:
                self._prepare()
                _write_atomically(self.directory / "files" / key[:2] / key, text.encode())
            except OSError:
                pass  # a cache that cannot be written is only slower

    # -- models ------------------------------------------------------------------------------
    def tool_versions(self) -> str:
        """``_tool_versions()``, remembered under the modification times of the import path's
        folders (installing, upgrading or removing a package changes its site-packages folder)."""
        stamp = hashlib.sha256(sys.version.encode())
        for entry in sys.path:
            try:
                stamp.update(f"{entry}\0{os.stat(entry or '.').st_mtime_ns}\0".encode())
            except OSError:
                stamp.update(f"{entry}\0-\0".encode())
        name = f"tools-{stamp.hexdigest()}"
        versions = self.get(name)
        if versions is None:
            versions = _tool_versions()
            self.put(name, versions)
        return versions

    def base_key(self) -> str:
        """What every model shares: generator code, tool versions and the whole template."""
        if self._base is None:
            digest = hashlib.sha256(self.tool_versions().encode())
            hash_folder(GENERATOR_DIR, digest)
            hash_folder(self.root / TEMPLATE_DIR, digest)
            self._base = digest.hexdigest()
        return self._base

    def technique_hash(self, name: str) -> str:
        cached = self._technique_hashes.get(name)
        if cached is None:
            folder = self.root / TECHNIQUES_DIR / name
            if not name or "/" in name or name.startswith("."):
                folder = self.root / ".smt" / "no-such-technique"
            cached = self._technique_hashes[name] = hash_folder(folder).hexdigest()
        return cached

    def model_key(self, model: str, directory: Path, answers: Mapping[str, Any]) -> str:
        """The hash of every input of one model's render (see the module docstring)."""
        digest = hashlib.sha256(self.base_key().encode() + b"\0" + model.encode() + b"\0")
        spec = directory / ANSWERS_FILE
        sha = self._spec_sha.get(spec) or (hashlib.sha256(spec.read_bytes()).hexdigest() if spec.is_file() else "<no spec>")
        digest.update(sha.encode())  # the answers are parsed from exactly these bytes
        hash_folder(directory / LOCAL_TECHNIQUES_DIR, digest)
        for name in technique_names(answers):
            digest.update(f"\0technique {name} ".encode() + self.technique_hash(name).encode())
        return digest.hexdigest()

    def model_digests(self, key: str) -> dict[str, str] | None:
        if not self.enabled:
            return None
        try:
            data = json.loads((self.directory / "models" / key[:2] / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def put_model(self, key: str, tree: Mapping[str, str]) -> None:
        if self.enabled:
            digests = {path: text_digest(text) for path, text in sorted(tree.items())}
            try:
                self._prepare()
                _write_atomically(self.directory / "models" / key[:2] / f"{key}.json", json.dumps(digests).encode())
            except OSError:
                pass


    # -- parsed specs (YAML is the slowest part of reading a large fleet) ----------------------
    def load_answers(self, path: Path) -> dict[str, Any]:
        """``fleet.load_answers``, remembered by the spec's SHA-256 (exactly its bytes)."""
        try:
            data = path.read_bytes()
        except OSError:
            return load_answers(path)  # its error message
        sha = hashlib.sha256(data).hexdigest()
        self._spec_sha[path] = sha
        if self._specs is None:
            self._specs = self._read_json(SPECS_FILE)
        known = self._specs.get(sha) if self.enabled else None
        if isinstance(known, str):
            return json.loads(known)
        answers = load_answers(path)
        try:
            text = json.dumps(answers)  # in the file's key order: `smt adopt` writes specs back from these
        except (TypeError, ValueError):
            return answers
        if json.loads(text) == answers:  # only specs that JSON carries exactly (no dates, tuples)
            self._specs[sha] = text
            self._dirty.add(SPECS_FILE)
        return answers

    # -- file hashes of model folders, trusted while the files' stat is unchanged ----------------
    def folder_digests(self, directory: Path) -> dict[str, str]:
        """``sync.digest_tree(directory)``, reading only files whose stat changed since recorded.

        A recorded hash is reused only when size, mtime, ctime and inode are all unchanged and the
        file was last changed at least two seconds before it was recorded (as git's index does for
        "racily clean" files): an edit always moves ctime, which no tool can set back.
        """
        if self._folders is None:
            self._folders = self._read_json("folders.json")
        key = str(directory.resolve())
        recorded = self._folders.get(key) if self.enabled else None
        recorded = recorded if isinstance(recorded, dict) else {}
        known = recorded.get("files", {}) if isinstance(recorded.get("files"), dict) else {}
        settled_before = int(recorded.get("at", 0)) - 2_000_000_000
        now = time.time_ns()
        digests, files, changed = {}, {}, False
        try:
            listed = list(tree_files(directory))
        except LinkedFolder:
            return {"<linked folder>": ""}  # never equal to a render's hashes: compared in full
        for relative, path in listed:
            try:
                info = os.stat(path)
            except OSError:
                digests[relative] = "<unreadable>"
                changed = True
                continue
            stat = [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]
            entry = known.get(relative)
            if entry and entry[:4] == stat and max(stat[1], stat[2]) < settled_before:
                sha = entry[4]
            else:
                sha = file_digest(path)
                changed = True
            digests[relative] = sha
            files[relative] = [*stat, sha]
        self._rehashed = changed or set(files) != set(known)
        if self._rehashed:
            self._folders[key] = {"at": now, "files": files}
            self._dirty.add("folders.json")
        return digests

    def in_sync(self, directory: Path, model_key: str) -> bool:
        """Whether ``directory``'s files equal the render recorded under ``model_key``.

        Fast path: the folder was found equal to that very render before and not one of its files
        has been re-hashed since (same files, same stat). Otherwise the hashes are compared with
        the model's entry, and a match is remembered for the fast path.
        """
        digests = self.folder_digests(directory)
        entry = self._folders.get(str(directory.resolve())) if self._folders is not None else None
        if not self._rehashed and isinstance(entry, dict) and entry.get("in_sync_with") == model_key:
            return True
        recorded = self.model_digests(model_key)
        if recorded is None or recorded != digests:
            return False
        if isinstance(entry, dict) and self.enabled:
            entry["in_sync_with"] = model_key
            self._dirty.add("folders.json")
        return True

    def _read_json(self, name: str) -> dict[str, Any]:
        if not self.enabled:
            return {}
        try:
            data = json.loads((self.directory / name).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def flush(self) -> None:
        """Write the spec and folder indexes if this run changed them."""
        if not self.enabled:
            return
        for name in sorted(self._dirty):
            data = self._specs if name == SPECS_FILE else self._folders
            try:
                self._prepare()
                _write_atomically(self.directory / name, json.dumps(data).encode())
            except OSError:
                pass
        self._dirty.clear()
