"""gan.outputs and evaluate.py's output paths: every bad one is one line naming the option, the path and the problem,
exit 2, before any checkpoint is loaded, and nothing is written."""

import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from gan import outputs
from gan.cli import evaluate_main, train_main
from gan.errors import UserError
from gan.outputs import check_output_file, check_output_folder

ROOT = os.geteuid() == 0  # root ignores permission bits: the chmod tests need another user


def _tree(root: Path) -> list[tuple[str, int, bytes | str | None]]:
    """Every entry under ``root``: its path, its kind, and a regular file's bytes or a link's target."""

    def content(path: Path, mode: int) -> bytes | str | None:
        if stat.S_ISLNK(mode):
            return os.readlink(path)
        return path.read_bytes() if stat.S_ISREG(mode) else None

    entries = []
    for path in sorted(root.rglob("*")):
        mode = os.lstat(path).st_mode
        entries.append((str(path.relative_to(root)), stat.S_IFMT(mode), content(path, mode)))
    return entries


@pytest.fixture
def place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a file, a folder named like an image, a folder named like statistics, a broken link
    and a pipe named like outputs, an input image and a stand-in checkpoint (not a real one: every check here
    comes before it is read)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "stats.npz").mkdir()
    (tmp_path / "old.npz").write_bytes(b"old statistics")
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "photo.png")
    (tmp_path / "broken.png").symlink_to(tmp_path / "gone")
    os.mkfifo(tmp_path / "pipe.npz")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    return tmp_path


# ------------------------------------------------------------------------------------------------ the checks
@pytest.mark.parametrize(
    "path, force",
    [
        ("new.png", False),
        ("a/b/c/new.png", False),  # missing parents are created by the writer, not by the check
        ("notes.txt", True),  # replacing a file where the command may
        ("dir.png/inside.png", False),
    ],
)
def test_check_output_file_accepts(place, path, force):
    before = _tree(place)
    check_output_file(Path(path), "--out", force)
    assert _tree(place) == before


@pytest.mark.parametrize(
    "path, force, message",
    [
        ("dir.png", True, "--out dir.png: is a folder; give a file name"),
        ("notes.txt/x.png", True, "--out notes.txt/x.png: notes.txt is a file, not a folder"),
        ("notes.txt/a/b/x.png", True, "--out notes.txt/a/b/x.png: notes.txt is a file, not a folder"),
        ("notes.txt", False, "--out notes.txt: exists; pass --force to replace it"),
        ("broken.png", True, "--out broken.png: is a broken symbolic link (to "),
        ("broken.png/x.png", True, "--out broken.png/x.png: broken.png is a broken symbolic link (to "),
        ("pipe.npz", True, "--out pipe.npz: exists and is not a regular file (a device, pipe or socket)"),
        ("x" * 300 + ".png", True, ": File name too long"),
    ],
)
def test_check_output_file_refuses(place, path, force, message):
    before = _tree(place)
    with pytest.raises(UserError) as info:
        check_output_file(Path(path), "--out", force)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert _tree(place) == before


@pytest.mark.parametrize("path", ["dir.png", "new", "a/b/c", "."])
def test_check_output_folder_accepts(place, path):
    before = _tree(place)
    check_output_folder(Path(path), "--out")
    assert _tree(place) == before


@pytest.mark.parametrize(
    "path, message",
    [
        ("notes.txt", "--out notes.txt: is a file, not a folder; give a folder name"),
        ("notes.txt/sub", "--out notes.txt/sub: notes.txt is a file, not a folder"),
        ("pipe.npz", "--out pipe.npz: is a file, not a folder"),
        ("broken.png/sub", "--out broken.png/sub: broken.png is a broken symbolic link"),
    ],
)
def test_check_output_folder_refuses(place, path, message):
    with pytest.raises(UserError) as info:
        check_output_folder(Path(path), "--out")
    assert message in str(info.value)


def _deny_writes_under(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """os.access says no to writing in ``folder`` (as a chmod 0o500 would, also for root)."""
    real = os.access

    def access(path, mode, **kwargs):
        inside = Path(path).resolve() == folder.resolve() or folder.resolve() in Path(path).resolve().parents
        return False if inside and mode & os.W_OK else real(path, mode, **kwargs)

    monkeypatch.setattr(outputs.os, "access", access)


@pytest.mark.parametrize(
    "check, path, message",
    [
        (check_output_file, "locked/x.npz", "--out locked/x.npz: permission denied: cannot write in locked"),
        (check_output_file, "locked/a/b/x.npz", "--out locked/a/b/x.npz: permission denied: cannot write in locked"),
        (check_output_file, "locked/kept.npz", "--out locked/kept.npz: permission denied (the file is read-only)"),
        (check_output_folder, "locked", "--out locked: permission denied: cannot write in locked"),
        (
            check_output_folder,
            "locked/new/deeper",
            "--out locked/new/deeper: permission denied: cannot write in locked",
        ),
    ],
)
def test_unwritable_folders_and_files_are_permission_denied(place, monkeypatch, check, path, message):
    (place / "locked").mkdir()
    (place / "locked" / "kept.npz").write_bytes(b"x")
    _deny_writes_under(monkeypatch, place / "locked")
    with pytest.raises(UserError) as info:
        check(Path(path), "--out")
    assert str(info.value) == message


def test_a_read_only_file_system_is_named(place, monkeypatch):
    class ReadOnly:
        f_flag = os.ST_RDONLY

    _deny_writes_under(monkeypatch, place)
    monkeypatch.setattr(outputs.os, "statvfs", lambda path: ReadOnly())
    with pytest.raises(UserError) as info:
        check_output_file(place / "x.npz", "--save-stats", force=True)
    assert str(info.value).endswith(f"x.npz: permission denied: {place} is on a read-only file system")


@pytest.mark.skipif(ROOT, reason="root ignores permission bits")
def test_a_chmod_0o500_folder_is_permission_denied(place):
    locked = place / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="permission denied: cannot write in locked"):
            check_output_file(Path("locked/x.png"), "--out")
        with pytest.raises(UserError, match="permission denied: cannot write in locked"):
            check_output_folder(Path("locked/sub"), "--out")
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------------------------------- the CLI
CKPT = "run/checkpoints/last.pt"
TRANSLATE = ["translate", "--checkpoint", CKPT, "--input", "imgs/photo.png", "--to", "palette"]


def _refused(capsys, args: list[str], place: Path, *needles: str) -> str:
    """evaluate.py ``args``: exit 2, one ``error:`` line holding every needle, no traceback, nothing written."""
    before = _tree(place)
    assert evaluate_main(args) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(needle in err for needle in needles), err
    assert captured.out == ""
    assert _tree(place) == before
    return err


@pytest.mark.parametrize(
    "args, needles",
    [
        ([*TRANSLATE, "--out", "notes.txt/x.png"], ["--out notes.txt/x.png: notes.txt is a file, not a folder"]),
        ([*TRANSLATE, "--out", "notes.txt/sub"], ["--out notes.txt/sub: notes.txt is a file, not a folder"]),
        (
            [*TRANSLATE, "--out", "dir.png"],
            ["--out dir.png: is a folder; give an image file name or a folder without the .png suffix"],
        ),
        ([*TRANSLATE, "--out", "notes.txt"], ["--out notes.txt: is a file, not a folder; name a folder"]),
        ([*TRANSLATE, "--out", "broken.png", "--force"], ["--out broken.png: is a broken symbolic link"]),
        (["fid", "--save-stats", "imgs", "stats.npz", "--force"], ["--save-stats stats.npz: is a folder"]),
        (["fid", "--save-stats", "imgs", "notes.txt/s.npz"], ["--save-stats notes.txt/s.npz: notes.txt is a file"]),
        (["fid", "--save-stats", "imgs", "old.npz"], ["--save-stats old.npz: exists; pass --force to replace it"]),
        (
            ["fid", "--save-stats", "imgs", "pipe.npz", "--force"],
            ["--save-stats pipe.npz: exists and is not a regular"],
        ),
        (["fid", "--checkpoint", CKPT, "--save-stats"], ["--save-stats: writes the statistics of a folder"]),
        (["fid", "--checkpoint", CKPT, "--stats-cache", "notes.txt"], ["--stats-cache notes.txt: is a file"]),
        (["kid", "--checkpoint", CKPT, "--stats-cache", "notes.txt/c"], ["--stats-cache notes.txt/c: notes.txt is"]),
        (["train-classifier", "--checkpoint", CKPT, "--out", "dir.png"], ["--out dir.png: is a folder; give a file"]),
        (["train-classifier", "--checkpoint", CKPT, "--out", "notes.txt/c.pt"], ["--out notes.txt/c.pt: notes.txt"]),
        (["train-classifier", "--checkpoint", CKPT, "--out", CKPT], [f"--out {CKPT}: is the checkpoint given"]),
        (["compare", "run", "--out", "notes.txt"], ["--out notes.txt: is a file, not a folder; give a folder"]),
        (["compare", "run", "--out", "notes.txt/report"], ["--out notes.txt/report: notes.txt is a file"]),
    ],
)
def test_bad_outputs_are_one_line_before_the_checkpoint_is_read(place, capsys, args, needles):
    _refused(capsys, args, place, *needles)


def test_the_default_classifier_file_is_checked(place, capsys):
    (place / "run" / "classifier.pt").mkdir()
    _refused(
        capsys, ["train-classifier", "--checkpoint", CKPT], place, "--out (default) run/classifier.pt: is a folder"
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        ([*TRANSLATE, "--out", "locked/x.png"], "--out locked/x.png"),
        ([*TRANSLATE, "--out", "locked/sub/out"], "--out locked/sub/out"),
        (["fid", "--save-stats", "imgs", "locked/s.npz"], "--save-stats locked/s.npz"),
        (["train-classifier", "--checkpoint", CKPT, "--out", "locked/c.pt"], "--out locked/c.pt"),
        (["compare", "run", "--out", "locked/report"], "--out locked/report"),
    ],
)
@pytest.mark.parametrize("how", ["chmod", "access"])
def test_unwritable_outputs_are_permission_denied(place, capsys, monkeypatch, args, needle, how):
    locked = place / "locked"
    locked.mkdir()
    if how == "chmod":
        if ROOT:
            pytest.skip("root ignores permission bits")
        locked.chmod(0o500)
    else:
        _deny_writes_under(monkeypatch, locked)
    try:
        _refused(capsys, args, place, f"{needle}: permission denied: cannot write in locked")
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------------------------- with a real checkpoint
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A one-step tiny run with its hooks off (a second or two)."""
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("outputs")
    (root / "tiny.yaml").write_text(TINY)
    off = [f"hooks.{name}.every=0" for name in ("scalars", "images", "sigma", "paired_l1", "fid", "lipschitz")]
    sets = [arg for value in ["train.steps=1", "train.lr_decay_steps=1", *off] for arg in ("--set", value)]
    assert train_main(["--config", str(root / "tiny.yaml"), "--run-dir", str(root / "run"), *sets]) == 0
    return root / "run" / "checkpoints" / "last.pt"


def test_a_real_checkpoint_is_refused_the_same_way(checkpoint, place, capsys):
    args = ["translate", "--checkpoint", str(checkpoint), "--input", "imgs/photo.png", "--to", "palette"]
    _refused(capsys, [*args, "--out", "notes.txt/x.png"], place, "--out notes.txt/x.png: notes.txt is a file")
    _refused(capsys, [*args, "--out", "dir.png"], place, "--out dir.png: is a folder")
    clf = ["train-classifier", "--checkpoint", str(checkpoint), "--steps", "1"]
    _refused(capsys, [*clf, "--out", "dir.png"], place, "--out dir.png: is a folder")
    _refused(capsys, [*clf, "--out", str(checkpoint)], place, "is the checkpoint given as --checkpoint")


def test_missing_parent_folders_are_created(checkpoint, place, capsys):
    args = ["translate", "--checkpoint", str(checkpoint), "--input", "imgs/photo.png", "--to", "palette"]
    assert evaluate_main([*args, "--out", "new/deeper/x.png"]) == 0
    assert Image.open(place / "new" / "deeper" / "x.png").size == (16, 16)
    assert evaluate_main([*args, "--out", "other/deeper"]) == 0
    assert (place / "other" / "deeper" / "photo_to_palette.png").is_file()
    clf = ["train-classifier", "--checkpoint", str(checkpoint), "--steps", "1", "--out", "models/deep/c.pt"]
    assert evaluate_main(clf) == 0
    assert (place / "models" / "deep" / "c.pt").is_file()
    assert "Traceback" not in capsys.readouterr().err


def test_an_output_inside_a_folder_out_that_is_a_folder_is_one_line(checkpoint, place, capsys):
    """translate --out DIR --force where DIR/<name>_to_<domain>.png is itself a folder; compare --out DIR where
    DIR/report.md is one: both were IsADirectoryError tracebacks after the work."""
    (place / "out" / "photo_to_palette.png").mkdir(parents=True)
    args = ["translate", "--checkpoint", str(checkpoint), "--input", "imgs/photo.png", "--to", "palette"]
    _refused(capsys, [*args, "--out", "out", "--force"], place, "--out out/photo_to_palette.png: is a folder")
    (place / "report" / "report.md").mkdir(parents=True)
    _refused(capsys, ["compare", "run", "--out", "report"], place, "--out report/report.md: is a folder")


@pytest.mark.parametrize(
    "main, args, needle",
    [
        (train_main, ["--workers", "x"], "train.py: argument --workers: invalid int value: 'x' (see train.py --help)"),
        (train_main, ["--bogus"], "train.py: unrecognized arguments: --bogus"),
        (evaluate_main, [], "evaluate.py: the following arguments are required: COMMAND"),
        (evaluate_main, ["nope"], "evaluate.py: argument COMMAND: invalid choice: 'nope'"),
        (evaluate_main, ["fid", "--num-images", "many"], "evaluate.py fid: argument --num-images: invalid int"),
    ],
)
def test_a_command_line_argparse_refuses_is_one_line(place, capsys, main, args, needle):
    """argparse's own errors (usage block + message) are one line like every other error; --help still works."""
    before = _tree(place)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {captured.err.removeprefix('error: ')}" and captured.err.count("\n") == 1
    assert needle in captured.err and captured.out == ""
    assert _tree(place) == before
