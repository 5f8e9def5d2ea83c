"""Failure injection: every file featx writes (extraction shards, checkpoints, exports, proposals) appears whole or
not at all. Each case makes the writer fail after writing half its bytes, as a full disk would, and checks that
neither the final file nor a temporary one is left, that the user's files are unchanged, and that the same call
succeeds once the disk has room again. What fails is the third-party writer (safetensors) or featx's own writer
function, never torch itself."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import folder_state, resnet18_spec
from PIL import Image

import featx
import featx.construct.checkpoint as checkpoint_module
import featx.tasks.export as export_module
import featx.tasks.extract.store as store_module
from featx.cli import propose as propose_cli
from featx.errors import ArgumentError
from featx.files import write_atomically
from featx.spec.apps import ExtractOptions
from featx.tasks.extract.run import extract

DISK_FULL = OSError(28, "No space left on device")


def _half_then_fail(path: Any) -> None:
    Path(path).write_bytes(b"half of what featx meant to write")
    raise DISK_FULL


def _leftovers(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(".partial"))


def test_a_shard_whose_write_fails_is_not_left_and_the_rerun_completes(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        Image.new("RGB", (40, 30), (index * 80, 0, 0)).save(photos / f"{index}.png")
    output = tmp_path / "feats"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    spec = featx.load_spec(resnet18_spec(device="cpu"))
    options = ExtractOptions(
        input=str(photos), output=str(output), size=[32, 32], batch_size=2, shard_size=2, workers=0, progress=False
    )
    monkeypatch.setattr(store_module, "save_file", lambda tensors, path, metadata: _half_then_fail(path))
    with pytest.raises(
        ArgumentError, match=r"^extract\.output: cannot write .*shard-r000-00001\.safetensors: No space"
    ):
        extract(spec, options)
    assert not list((output / "featx-shards").glob("*.safetensors")) and _leftovers(output) == []
    assert (output / "notes.txt").read_text() == "mine"
    monkeypatch.undo()
    summary = extract(spec, options)
    assert summary.images == 3 and len(list(featx.read_features(output))) == 3


def test_a_checkpoint_whose_write_fails_leaves_the_old_file(tmp_path, monkeypatch):
    """The ``.safetensors`` writer fails midway (``.pt`` files go through the same temporary-file writer, with
    ``torch.save`` as the writer function)."""
    target = tmp_path / "bb.safetensors"
    target.write_bytes(b"the user's previous checkpoint")
    backbone = featx.build(resnet18_spec(device="cpu"))
    monkeypatch.setattr(checkpoint_module, "save_safetensors", lambda state, path, metadata: _half_then_fail(path))
    with pytest.raises(ArgumentError, match=r"^save\(\): cannot write .*bb\.safetensors: No space left on device"):
        featx.save(backbone, target, overwrite=True)
    assert folder_state(tmp_path) == {"bb.safetensors": b"the user's previous checkpoint"}
    monkeypatch.undo()
    featx.save(backbone, target, overwrite=True)
    assert featx.load(target).spec.stages == backbone.spec.stages


def test_an_export_whose_write_fails_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    backbone = featx.build(resnet18_spec(device="cpu"))
    monkeypatch.setattr(
        export_module, "_write_torchscript", lambda backbone, example, partial, dynamic: _half_then_fail(partial)
    )
    with pytest.raises(ArgumentError, match=r"^path: cannot write .*bb\.pt: No space left on device"):
        export_module.export_backbone(backbone, tmp_path / "bb.pt", "torchscript", (32, 32))
    assert folder_state(tmp_path) == {"notes.txt": b"mine"}
    monkeypatch.undo()
    assert export_module.export_backbone(backbone, tmp_path / "bb.pt", "torchscript", (32, 32)).path.is_file()


def test_a_proposal_whose_write_fails_leaves_nothing(tmp_path, monkeypatch, capsys):
    original = Path.write_text

    def write_text(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name.endswith(".partial"):
            _half_then_fail(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(SystemExit):
        propose_cli.main(["resnet18", "-o", str(tmp_path / "r18.yaml")])
    assert "--output: cannot write" in capsys.readouterr().err
    assert folder_state(tmp_path) == {}
    monkeypatch.undo()
    propose_cli.main(["resnet18", "-o", str(tmp_path / "r18.yaml")])
    assert featx.load_spec(str(tmp_path / "r18.yaml")).model == "resnet18"


def test_a_generated_page_replaces_only_a_page_of_the_same_title(tmp_path):
    """bench.py --output and the experiment's summary_page rewrite their own pages, never a file of the user's."""
    from featx.files import write_generated_page

    page = tmp_path / "results" / "cpu.md"
    write_generated_page(page, "# Benchmark results (generated)\n\nfirst run\n", "--output")
    write_generated_page(page, "# Benchmark results (generated)\n\nsecond run\n", "--output")
    assert page.read_text() == "# Benchmark results (generated)\n\nsecond run\n"
    mine = tmp_path / "notes.md"
    mine.write_text("# My notes\nsecret\n")
    with pytest.raises(featx.ArgumentError) as caught:
        write_generated_page(mine, "# Benchmark results (generated)\n\nrun\n", "--output")
    assert str(caught.value) == (
        f"--output: {mine} exists and is not a page this script wrote (its first line is not "
        "'# Benchmark results (generated)'); nothing was written: give another path, or move that file"
    )
    assert mine.read_text() == "# My notes\nsecret\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.md",
        "results",
    ]


@pytest.fixture()
def umask_027():
    """A group-readable umask for the test (restored after)."""
    previous = os.umask(0o027)
    yield
    os.umask(previous)


@pytest.mark.parametrize("name", ["bb.safetensors", "bb.pt"])
def test_saved_files_get_the_permissions_the_umask_gives(tmp_path, umask_027, name):
    """safetensors writes its files 0600 whatever the umask; featx's files are the user's files like any other."""
    path = featx.save(featx.build(resnet18_spec()), tmp_path / name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_extraction_shards_get_the_permissions_the_umask_gives(tmp_path, umask_027):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "images" / "one.png")
    options = ExtractOptions(input=str(tmp_path / "images"), output=str(tmp_path / "out"), size=[32, 32], workers=0)
    extract(featx.load_spec(resnet18_spec(), overrides=[]), options)
    written = [tmp_path / "out" / "featx-manifest.jsonl", *(tmp_path / "out" / "featx-shards").iterdir()]
    assert {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in written} == {
        path.name: "0o640" for path in written
    }


@pytest.mark.parametrize("target", ["file", "dangling"])
def test_a_symbolic_link_is_never_replaced_nor_written_through(tmp_path, target, capsys):
    """With --force a link was replaced by a file (as root, ``-o /dev/stdout --force`` would replace /dev/stdout)."""
    pointed = tmp_path / "theirs.yaml"
    if target == "file":
        pointed.write_text("theirs")
    link = tmp_path / "link.yaml"
    link.symlink_to(pointed)
    with pytest.raises(SystemExit) as caught:
        propose_cli.main(["resnet18", "-o", str(link), "--force"])
    assert caught.value.code == 1
    message = capsys.readouterr().err
    assert message.startswith(f"featx-propose: error: --output: {link} is a symbolic link; featx writes"), message
    (tmp_path / "link.pt").symlink_to(pointed)
    with pytest.raises(ArgumentError, match=r"^save\(\): .*link\.pt is a symbolic link; featx writes only to a file"):
        featx.save(featx.build(resnet18_spec()), tmp_path / "link.pt", overwrite=True)
    assert link.is_symlink() and (tmp_path / "link.pt").is_symlink()
    assert (pointed.read_text() == "theirs") if target == "file" else not pointed.exists()


def _writer_stopped_midway(target: Path, overwrite: bool) -> "subprocess.Popen[bytes]":
    """A process writing ``target`` through write_atomically that has written half its temporary file and sleeps
    (returned once that file is there)."""
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom featx.files import write_atomically\n"
        "write_atomically(Path(sys.argv[1]), lambda p: (p.write_text('half'), time.sleep(600)), "
        f"overwrite={overwrite}, what='save()')\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(target)])
    deadline = time.monotonic() + 120
    while not [p for p in target.parent.iterdir() if p.name.endswith(".partial")] and time.monotonic() < deadline:
        time.sleep(0.1)
    return writer


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """A save/export/propose killed mid-write left its `.partial` file for good. The next write to the same path
    removes the ones whose writer (on this host) is gone; a running writer's, another host's and the user's stay."""
    from featx.files import _HOST, write_atomically

    target = tmp_path / "bb.pt"
    writer = _writer_stopped_midway(target, overwrite=False)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    (left,) = [p.name for p in tmp_path.iterdir()]
    assert left.startswith(f".bb.pt.{_HOST}-{writer.pid}-") and left.endswith(".partial")
    (tmp_path / f"{left}.data").write_bytes(b"weights torch's ONNX exporter wrote beside it")  # removed with it
    kept = {
        f".bb.pt.{_HOST}-{os.getpid()}-0123abcd.partial": b"a running writer's",  # this process is alive
        f".bb.pt.{_HOST}-{os.getpid()}-0123abcd.partial.data": b"a running writer's",
        f".bb.pt.{'1' if _HOST[0] == '0' else '0'}{_HOST[1:]}-{writer.pid}-0123abcd.partial": b"another host's",
        ".bb.pt.mine.partial": b"the user's",
        "other.pt": b"the user's",
    }
    for name, content in kept.items():
        (tmp_path / name).write_bytes(content)
    write_atomically(target, lambda p: p.write_text("whole"), overwrite=False, what="save()")
    assert folder_state(tmp_path) == {**kept, "bb.pt": b"whole"}


def test_a_writer_in_another_pid_namespace_keeps_its_temporary_file(tmp_path):
    """Two containers sharing a folder and a host name (docker --network=host) each number their processes: a write
    in one took the other's running writer for a killed one (no such process id here) and removed its temporary
    file mid-write. The writer here runs in this process's namespace, the second write in a new one (unshare)."""

    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rpf", "--mount-proc", "true"], capture_output=True).returncode:
        pytest.skip("this machine cannot make a PID namespace without privileges (unshare -rpf)")
    target = tmp_path / "bb.pt"
    writer = _writer_stopped_midway(target, overwrite=True)
    try:
        (partial,) = [p.name for p in tmp_path.iterdir()]
        second = "from pathlib import Path\nimport sys\nfrom featx.files import write_atomically\n"
        second += (
            "write_atomically(Path(sys.argv[1]), lambda p: p.write_text('whole'), overwrite=True, what='save()')\n"
        )
        done = subprocess.run(
            [unshare, "-rpf", "--mount-proc", sys.executable, "-c", second, str(target)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert folder_state(tmp_path) == {partial: b"half", "bb.pt": b"whole"}
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()


def test_a_path_holding_line_breaks_or_terminal_escapes_is_named_escaped(tmp_path):
    """featx-export's and featx-propose's refusals printed the path as given: an ESC or a newline in an output name
    forged terminal output and split the one error line."""
    path = tmp_path / "a\n\x1b[31mb"
    path.write_text("mine")
    with pytest.raises(ArgumentError) as caught:
        write_atomically(path, lambda p: p.write_text("x"), overwrite=False, what="--output", hint="pass --force")
    assert str(caught.value) == f"--output: {tmp_path}/a\\n\\x1b[31mb exists; pass --force (nothing was written)"
    assert path.read_text() == "mine"


def test_a_refused_write_leaves_no_folder_it_made_for_the_file(tmp_path, monkeypatch):
    """new/../mine.pt: the path did not exist until new/ was made, then the file beside it was found and kept, and
    the refusal ("nothing was written") left the empty folder new/ behind; so did a write that failed."""
    monkeypatch.chdir(tmp_path)
    Path("mine.pt").write_text("the user's own\n")
    with pytest.raises(ArgumentError, match=r"^save\(\): new/\.\./mine\.pt exists; pass overwrite=True"):
        featx.save(featx.build(resnet18_spec()), "new/../mine.pt")
    assert sorted(os.listdir(tmp_path)) == ["mine.pt"] and Path("mine.pt").read_text() == "the user's own\n"
    Path("made").mkdir()
    with pytest.raises(ZeroDivisionError):  # a writer that fails: the folders made for it go too, not one made before
        write_atomically(Path("made/deeper/deepest/x.bin"), lambda partial: 1 / 0, overwrite=False, what="test")
    assert sorted(os.listdir(tmp_path)) == ["made", "mine.pt"] and os.listdir("made") == []


def test_a_folder_the_path_climbs_out_of_is_not_made(tmp_path, monkeypatch, capsys):
    """featx-propose resnet18 -o zz/../out.yaml made the folder zz (the file is not in it: the OS resolves zz/.. only
    once zz exists) and left it after the write; a ``..`` after a folder that exists, a symbolic link included, is
    the OS's to resolve."""
    monkeypatch.chdir(tmp_path)
    propose_cli.main(["resnet18", "-o", "zz/../out.yaml"])
    assert capsys.readouterr().err == "featx-propose: wrote zz/../out.yaml\n"
    assert sorted(os.listdir(tmp_path)) == ["out.yaml"] and featx.load_spec("out.yaml").model == "resnet18"
    written = write_atomically(Path("a/b/../../c/x.bin"), lambda p: p.write_text("x"), overwrite=False, what="t")
    assert written == Path("c/x.bin") and folder_state(tmp_path / "c") == {"x.bin": b"x"}
    assert sorted(os.listdir(tmp_path)) == ["c", "out.yaml"]
    (tmp_path / "elsewhere" / "inner").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere" / "inner")
    written = write_atomically(Path("link/../new/../y.bin"), lambda p: p.write_text("y"), overwrite=False, what="t")
    assert written == Path("link/../y.bin") and folder_state(tmp_path / "elsewhere") == {
        "inner": "<folder>",
        "y.bin": b"y",
    }
    with pytest.raises(ArgumentError, match=r"^t: new/\.\./out\.yaml exists; set overwrite to replace it"):
        write_atomically(Path("new/../out.yaml"), lambda p: p.write_text("no"), overwrite=False, what="t")
    assert sorted(os.listdir(tmp_path)) == ["c", "elsewhere", "link", "out.yaml"]
