"""Describe (and optionally pack) the app code of a checkout, on the controller.

Prints one JSON object: the release id, a digest of the shipped files, the git commit they come
from, a digest of the pinned requirements, the torch pin, and where the archive lies. The same files
always give the same digest and the same archive bytes, so deploying unchanged code changes nothing.
Run by the app role (delegate_to: localhost); standard library only.
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

# Fixed metadata in the archive: owner, group and times come from the role, not from the controller.
EPOCH = 315532800  # 1980-01-01, as in wheels
DIR_MODE = 0o750
FILE_MODE = 0o640
EXEC_MODE = 0o750
TORCH_PIN = re.compile(r"^torch==([0-9][0-9A-Za-z.+!-]*)\s*(#.*)?$")


def shipped_files(root: Path, paths: list[str], excludes: list[str]) -> list[Path]:
    """Files under the shipped paths, relative to root, sorted; excluded names prune whole folders."""
    found: list[Path] = []
    for entry in paths:
        top = root / entry
        if top.is_symlink():
            raise SystemExit(f"{entry}: symlinks are not shipped")
        if top.is_file():
            found.append(Path(entry))
            continue
        if not top.is_dir():
            raise SystemExit(f"{entry}: not found under {root}")
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not excluded(d, excludes))
            for name in sorted(files):
                path = Path(folder) / name
                if excluded(name, excludes):
                    continue
                if path.is_symlink():
                    raise SystemExit(f"{path.relative_to(root)}: symlinks are not shipped")
                found.append(path.relative_to(root))
    return sorted(set(found))


def excluded(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def is_executable(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o100)


def tree_digest(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for rel in files:
        content = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        digest.update(f"{rel.as_posix()}\0{int(is_executable(root / rel))}\0{content}\n".encode())
    return digest.hexdigest()


def git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_commit(root: Path, paths: list[str]) -> tuple[str | None, bool]:
    """The last commit that touched the shipped paths (else HEAD), and whether they differ from it."""
    if git(root, "rev-parse", "--is-inside-work-tree") != "true":
        return None, False
    commit = git(root, "log", "-1", "--format=%H", "--", *paths) or git(root, "rev-parse", "HEAD")
    dirty = git(root, "status", "--porcelain", "--untracked-files=all", "--", *paths) is not None
    return commit, dirty


def torch_pin(path: Path) -> str:
    pins = [m.group(1) for line in path.read_text().splitlines() if (m := TORCH_PIN.match(line.strip()))]
    if len(pins) != 1:
        raise SystemExit(f"{path}: expected exactly one 'torch==VERSION' line, found {len(pins)}")
    return pins[0]


def write_archive(root: Path, files: list[Path], target: Path) -> None:
    """A gzip'd tar whose bytes depend only on the file names, contents and exec bits."""
    folders = sorted({parent for rel in files for parent in rel.parents if parent != Path(".")})
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in folders:
            info = tarfile.TarInfo(folder.as_posix())
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, DIR_MODE, EPOCH
            tar.addfile(info)
        for rel in files:
            data = (root / rel).read_bytes()
            info = tarfile.TarInfo(rel.as_posix())
            info.size, info.mtime = len(data), EPOCH
            info.mode = EXEC_MODE if is_executable(root / rel) else FILE_MODE
            tar.addfile(info, io.BytesIO(data))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    with partial.open("wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    partial.replace(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True, type=Path, help="checkout that holds the app code")
    parser.add_argument("--path", action="append", required=True, dest="paths", help="shipped file or folder")
    parser.add_argument("--exclude", action="append", default=[], dest="excludes", help="file/folder name pattern")
    parser.add_argument("--requirements", action="append", required=True, help="pinned requirements file")
    parser.add_argument("--torch-requirements", required=True, help="requirements file that pins torch")
    parser.add_argument("--release-id", default="", help="use this id instead of the derived one")
    parser.add_argument("--archive-dir", type=Path, help="write <dir>/<release id>-<digest>.tar.gz when missing")
    args = parser.parse_args()

    root = args.source.resolve()
    files = shipped_files(root, args.paths, args.excludes)
    for rel in [*args.requirements, args.torch_requirements]:
        if Path(rel) not in files:
            raise SystemExit(f"{rel} is not among the shipped files")
    digest = tree_digest(root, files)
    commit, dirty = git_commit(root, args.paths)
    requirements = hashlib.sha256()
    for rel in [*args.requirements, args.torch_requirements]:
        requirements.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    release_id = args.release_id or f"{commit[:10] if commit else 'local'}-{digest[:10]}"

    result = {
        "release_id": release_id,
        "digest": digest,
        "files": len(files),
        "git_sha": f"{commit}{'-dirty' if dirty else ''}" if commit else "unknown",
        "requirements_digest": requirements.hexdigest(),
        "torch_pin": torch_pin(root / args.torch_requirements),
        "archive": None,
        "changed": False,
    }
    if args.archive_dir:
        archive = args.archive_dir.resolve() / f"{release_id}-{digest[:16]}.tar.gz"
        if not archive.exists():
            write_archive(root, files, archive)
            result["changed"] = True
        result["archive"] = str(archive)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
