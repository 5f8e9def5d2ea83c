"""Hydra: composing the real configs, instantiate, and the featx app run as users run it."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import APP_MODULES, folder_state, run_in_process
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

import featx
from featx.cli import propose as propose_cli
from featx.cli.override_checks import plain_nested_overrides
from featx.spec.config_files import config_dir


def _compose(overrides):
    with initialize_config_module(config_module="featx.conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_compose_with_overrides_and_instantiate():
    cfg = _compose(["backbone=resnet50_fpn", "backbone.fpn.out_channels=128", "backbone.device=cpu"])
    assert cfg.backbone.fpn.out_channels == 128
    backbone = instantiate(cfg.backbone)
    assert isinstance(backbone, featx.Backbone)
    assert [(i.name, i.channels) for i in backbone.feature_info] == [("p2", 128), ("p3", 128), ("p4", 128), ("p5", 128)]
    assert backbone.spec == featx.build(cfg.backbone).spec


def test_a_config_dumped_by_an_older_featx_instantiates_as_it_builds():
    """Configs dumped before the package was restructured name featx.hydra_conf.instantiate_backbone: featx.build
    took them, and Hydra's instantiate failed to import the target."""
    cfg = OmegaConf.to_container(_compose(["backbone=resnet18", "backbone.device=cpu"]))
    assert cfg["backbone"]["_target_"] == "featx.spec.hydra_store.instantiate_backbone"
    old = OmegaConf.create({**cfg["backbone"], "_target_": "featx.hydra_conf.instantiate_backbone"})
    backbone, built = instantiate(old), featx.build(old)
    assert isinstance(backbone, featx.Backbone) and backbone.spec == built.spec
    for (name, a), b in zip(backbone.state_dict().items(), built.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_instantiate_and_build_agree_for_every_conf_file(backbone_name, tmp_path, monkeypatch):
    monkeypatch.delenv("FEATX_NO_CACHE")  # the packaged plans, as installed: this is no test of the planner
    monkeypatch.setenv("FEATX_CACHE_DIR", str(tmp_path))
    cfg = _compose([f"backbone={backbone_name}", "backbone.device=meta"])
    assert (
        instantiate(cfg.backbone).spec
        == featx.build(cfg.backbone).spec
        == featx.load_spec(backbone_name, overrides=["device=meta"])
    )


def test_instantiate_resolves_a_nodes_interpolations_and_build_refuses_them(monkeypatch):
    """What docs/apps.md says of the difference: Hydra resolves a node before it calls the target, so an environment
    value reaches featx through instantiate; featx.build of the same node refuses the resolver call."""
    monkeypatch.setenv("FEATX_TEST_DEVICE", "meta")
    cfg = _compose(["backbone=resnet18", "backbone.device=${oc.env:FEATX_TEST_DEVICE}"])
    assert instantiate(cfg.backbone).spec.device == "meta"
    with pytest.raises(featx.SpecError, match=r"^backbone\.device: "):
        featx.build(cfg.backbone)


def test_composition_rejects_unknown_keys_with_the_key_named():
    with pytest.raises(ConfigCompositionException, match="Could not override 'backbone.frozen_stage'") as caught:
        _compose(["backbone=resnet34", "backbone.frozen_stage=1"])
    assert "Key 'frozen_stage' not in 'BackboneNode'" in str(caught.value.__cause__)


def test_composing_a_user_file_with_a_typo_fails_at_compose_time(tmp_path):
    (tmp_path / "backbone").mkdir()
    text = (config_dir() / "backbone" / "resnet34.yaml").read_text().replace("frozen_stages:", "frozen_stagez:")
    (tmp_path / "backbone" / "typo.yaml").write_text(text)
    with pytest.raises(ConfigCompositionException) as caught:
        _compose(["backbone=typo", f"hydra.searchpath=[file://{tmp_path}]"])
    assert "Key 'frozen_stagez' not in 'BackboneNode'\n    full_key: backbone.frozen_stagez" in str(caught.value)


def test_composition_rejects_wrong_types():
    with pytest.raises(ConfigCompositionException, match="backbone.frozen_stages=two"):
        _compose(["backbone=resnet34", "backbone.frozen_stages=two"])


def test_a_downstream_compose_takes_the_plain_fpn_override_through_featx_s_rewrite():
    """Hydra itself cannot set a key below a null node (``fpn: null``); a downstream app composing featx's group
    passes its overrides through ``plain_nested_overrides`` (what featx's own apps do), or writes ``++``."""
    with pytest.raises(ConfigCompositionException, match=r"\+backbone\.fpn\.out_channels=64"):
        _compose(["backbone=resnet50", "backbone.fpn.out_channels=64"])
    overrides = plain_nested_overrides(["backbone=resnet50", "backbone.fpn.out_channels=64", "backbone.device=cpu"])
    assert overrides[1] == "++backbone.fpn.out_channels=64"
    for given in (overrides, ["backbone=resnet50_fpn", "++backbone.fpn.out_channels=64", "backbone.device=cpu"]):
        backbone = instantiate(_compose(given).backbone)
        assert backbone.out_channels == 64 and [i.name for i in backbone.feature_info] == ["p2", "p3", "p4", "p5"]


def _run_app(args, cwd: Path, tmp: Path, module: str = "featx"):
    env = {**os.environ, "TMPDIR": str(tmp), "HYDRA_FULL_ERROR": "0"}
    return run_in_process(module, args, cwd, env)


@pytest.fixture
def workdirs(tmp_path):
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    return cwd, tmp


@pytest.mark.parametrize("module", ["featx", "featx.cli.export", "featx.cli.extract"])
def test_every_app_refuses_to_change_the_working_directory(workdirs, module):
    cwd, tmp = workdirs
    result = _run_app(["backbone=resnet18", "hydra.job.chdir=true"], cwd, tmp, module)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "error: hydra.job.chdir: featx's apps never change the working directory (paths such as export.path and "
        "extract.input are relative to where you run them); remove hydra.job.chdir=true"
    )
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    "module, args, message",
    [
        (
            "featx",
            ["backbone=resnet18", "run=false", "hydra.run.dir=notes.txt"],
            "hydra.run.dir: Hydra keeps this run's logs in notes.txt, and {cwd}/notes.txt is not a folder",
        ),
        (
            "featx",
            ["-m", "backbone=resnet18", "run=false", "hydra.sweep.dir=notes.txt/x"],
            "hydra.sweep.dir: Hydra keeps this run's logs in notes.txt/x, and {cwd}/notes.txt is not a folder",
        ),
        (
            "featx.cli.export",
            ["backbone=resnet18", "export.path=a.pt", "hydra.run.dir=notes.txt/x"],
            "hydra.run.dir: Hydra keeps this run's logs in notes.txt/x",
        ),
        (  # an unset shell variable: Hydra took the working directory and replaced a .hydra/ folder there
            "featx",
            ["backbone=resnet18", "run=false", "hydra.run.dir="],
            "hydra.run.dir: empty (an unset shell variable?), which Hydra would take as the working directory",
        ),
        (
            "featx.cli.extract",
            ["-m", "backbone=resnet18", "extract.input=.", "extract.output=o", "hydra.sweep.dir="],
            "hydra.sweep.dir: empty (an unset shell variable?), which Hydra would take as the working directory",
        ),
    ],
)
def test_an_output_folder_hydra_cannot_make_is_one_error_line(workdirs, module, args, message):
    cwd, tmp = workdirs
    (cwd / "notes.txt").write_text("mine")
    result = _run_app(args, cwd, tmp, module)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert message.format(cwd=cwd) in line and line.endswith("(the default is under $TMPDIR)"), line
    assert sorted(path.name for path in cwd.iterdir()) == ["notes.txt"] and (cwd / "notes.txt").read_text() == "mine"


def test_the_default_output_root_is_private_to_the_user(workdirs):
    """The default folders were $TMPDIR/featx-outputs/<app>/<second>: in a shared /tmp another user could make
    that folder first (refusing everyone else's runs) or plant links at the coming seconds' names, through which
    featx wrote its config into a folder of theirs."""
    cwd, tmp = workdirs
    result = _run_app(["backbone=resnet18", "run=false"], cwd, tmp)
    assert result.returncode == 0, result.stderr
    root = tmp / f"featx-outputs-{os.getuid()}"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    (run,) = (root / "runs").iterdir()
    assert (run / ".hydra" / "config.yaml").is_file()


def test_a_tmpdir_that_does_not_exist_yet_is_made(workdirs):
    cwd, tmp = workdirs
    result = _run_app(["backbone=resnet18", "run=false"], cwd, tmp / "not" / "yet")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp / "not" / "yet" / f"featx-outputs-{os.getuid()}").stat().st_mode) == 0o700


@pytest.mark.parametrize("plant", ["link", "open-to-all"])
def test_an_output_root_someone_else_could_have_made_is_refused(workdirs, plant):
    cwd, tmp = workdirs
    root = tmp / f"featx-outputs-{os.getuid()}"
    theirs = tmp / "theirs"
    theirs.mkdir()
    if plant == "link":
        root.symlink_to(theirs)
        problem = f"{root} is not a folder but a link"
    else:
        root.mkdir()
        root.chmod(0o777)
        problem = f"{root} can be written by other users"
    result = _run_app(["backbone=resnet18", "run=false"], cwd, tmp)
    assert result.returncode == 1
    assert f"featx: error: hydra.run.dir: Hydra keeps this run's logs in {root}/runs/" in result.stderr
    assert f", and {problem}; give another folder with hydra.run.dir=..." in result.stderr
    assert list(theirs.iterdir()) == [] and list(root.iterdir()) == []


def test_app_prints_the_table_and_leaves_the_working_directory_alone(workdirs):
    cwd, tmp = workdirs
    result = _run_app(
        ["backbone=resnet50_fpn", "backbone.fpn.out_channels=128", "input.height=64", "input.width=96"], cwd, tmp
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("featx backbone=resnet50_fpn (resnet50) | weights: random init")
    rows = {line.split()[1]: line.split() for line in lines if line.startswith("*")}
    assert list(rows) == ["p2", "p3", "p4", "p5"]
    assert rows["p2"][-6:-3] == ["128", "4", "1x128x16x24"]
    assert rows["p5"][-6:-3] == ["128", "32", "1x128x2x3"]
    assert any(line.startswith("        c2 ") and line.endswith("frozen") for line in lines)
    assert "device cpu | input 1x3x64x96 | build" in lines[-1]
    assert list(cwd.iterdir()) == []


def test_app_takes_the_plain_fpn_override_on_a_backbone_without_a_neck(workdirs):
    cwd, tmp = workdirs
    result = _run_app(["backbone=resnet18", "backbone.fpn.out_channels=64", "run=false"], cwd, tmp)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("*")]
    assert [(row[1], row[-6]) for row in rows] == [("p2", "64"), ("p3", "64"), ("p4", "64"), ("p5", "64")]
    dumped = _run_app(["backbone=resnet18", "--cfg", "job"], cwd, tmp)
    assert OmegaConf.create(dumped.stdout).backbone.fpn is None  # no neck: still null


def test_app_help_shows_featx_usage_above_hydras(workdirs):
    cwd, tmp = workdirs
    result = _run_app(["--help"], cwd, tmp)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("featx: Build a backbone from its YAML spec")
    assert text.index("Examples:\n  featx backbone=resnet50_fpn") < text.index("== Configuration groups ==")
    assert "vit_b_16_fpn" in text and "-v keeps other libraries'" in text


def test_app_inspect_mode_prints_the_same_table_without_weights(workdirs):
    cwd, tmp = workdirs
    args = ["backbone=resnet50_fpn", "backbone.fpn.extra_blocks=maxpool", "input.height=64", "input.width=96"]
    real, inspected = (_run_app(args + [f"run={run}"], cwd, tmp) for run in ("true", "false"))
    assert real.returncode == 0 and inspected.returncode == 0, inspected.stderr
    real_lines, inspected_lines = real.stdout.splitlines(), inspected.stdout.splitlines()
    assert inspected_lines[1:-1] == real_lines[1:-1]  # every row: channels, strides, shapes, parameter counts
    assert "(not loaded: run=false)" in inspected_lines[0]
    assert inspected_lines[-1].startswith("device meta | input 1x3x64x96")


def test_app_resolved_config(workdirs):
    cwd, tmp = workdirs
    result = _run_app(["backbone=vgg16", "--cfg", "job", "--resolve"], cwd, tmp)
    assert result.returncode == 0, result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert cfg.backbone.model == "vgg16" and cfg.backbone.stages.c5.slice == [23, 29]
    assert "modules: null" not in result.stdout and all(
        list(stage) == ["slice"] for stage in cfg.backbone.stages.values()
    )
    assert featx.load_spec(cfg.backbone) == featx.load_spec("vgg16")
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("flags", [["--cfg=job", "--resolve"], ["-cjob", "--resolve"], ["--cf", "job", "--resolve"]])
def test_app_resolved_config_with_the_flags_spelt_as_hydra_takes_them(workdirs, flags):
    """featx's own check of --resolve compared exact strings: ``--cfg=job --resolve`` (and Hydra's other spellings)
    was refused as "use it with --cfg job"."""
    cwd, tmp = workdirs
    result = _run_app([*flags, "backbone=vgg16"], cwd, tmp)
    assert result.returncode == 0, result.stderr
    assert OmegaConf.create(result.stdout).backbone.stages.c5.slice == [23, 29]


def test_app_reports_spec_errors_without_a_traceback(workdirs):
    cwd, tmp = workdirs
    result = _run_app(["backbone=resnet34", "backbone.model=resnet5"], cwd, tmp)
    assert result.returncode == 1
    assert "featx: error: backbone.model: unknown torchvision model 'resnet5'; did you mean resnet50" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("input.height=0", "featx: error: input.height: must be an integer in 1..16384, got 0"),
        ("input.height=8", "featx: error: input 8x224: the forward pass failed"),
    ],
)
def test_app_reports_bad_input_sizes_without_a_traceback(workdirs, override, message):
    cwd, tmp = workdirs
    result = _run_app(["backbone=vgg16", override], cwd, tmp)
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_app_refuses_an_unavailable_device(workdirs):
    cwd, tmp = workdirs
    result = _run_app(["backbone=resnet34", "backbone.device=cuda"], cwd, tmp)
    assert result.returncode == 1
    assert "featx: error: backbone.device: 'cuda' is not available on this machine" in result.stderr


def test_app_sweeps_a_glob_of_conf_backbones(workdirs):
    """Hydra's glob sweep over the backbone group (every file composes: test_instantiate_and_build_agree...)."""
    cwd, tmp = workdirs
    sweep_dir = tmp / "sweep"
    result = _run_app(["-m", "backbone=glob(res*_fpn)", "run=false", f"hydra.sweep.dir={sweep_dir}"], cwd, tmp)
    assert result.returncode == 0, result.stderr
    titles = [line for line in result.stdout.splitlines() if line.startswith("featx backbone=")]
    swept = sorted(title.split()[1].split("=")[1] for title in titles)
    assert swept == ["resnet18_fpn", "resnet50_fpn", "resnext50_32x4d_fpn"]
    assert (sweep_dir / "multirun.yaml").is_file()
    assert list(cwd.iterdir()) == []


def _user_config_root(cwd: Path) -> Path:
    """A user's own config root beside featx's: my_configs/backbone/*.yaml (one written by featx-propose)."""
    root = cwd / "my_configs"
    (root / "backbone").mkdir(parents=True)
    propose_cli.main(["mobilenet_v3_small", "--fpn", "64", "-o", str(root / "backbone" / "tiny.yaml")])
    return root


def test_app_uses_a_users_backbone_from_the_search_path(workdirs):
    cwd, tmp = workdirs
    _user_config_root(cwd)
    args = ["hydra.searchpath=[file://my_configs]", "backbone=tiny", "input.height=64", "input.width=64"]
    result = _run_app(args, cwd, tmp)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("featx backbone=tiny (mobilenet_v3_small) | weights: random init")
    assert featx.build(cwd / "my_configs" / "backbone" / "tiny.yaml", overrides=["device=meta"]).out_channels == 64
    assert sorted(path.name for path in cwd.iterdir()) == ["my_configs"]


@pytest.mark.parametrize(
    "app, module, args",
    [
        ("featx", "featx", ["run=false"]),
        ("featx-export", "featx.cli.export", ["export.path=bb.pt"]),
        ("featx-extract", "featx.cli.extract", ["extract.input=my_configs", "extract.output=out"]),
    ],
)
def test_every_app_refuses_a_user_file_that_shadows_a_packaged_name(workdirs, app, module, args):
    cwd, tmp = workdirs
    root = _user_config_root(cwd)
    (root / "backbone" / "resnet18.yaml").write_text((config_dir() / "backbone" / "vgg11.yaml").read_text())
    result = _run_app(["hydra.searchpath=[file://my_configs]", "backbone=resnet18", *args], cwd, tmp, module)
    assert result.returncode == 1
    assert sorted(path.name for path in cwd.iterdir()) == ["my_configs"]  # nothing exported or extracted
    assert result.stderr.strip() == (
        f"{app}: error: backbone=resnet18 names 2 files on the config search path: "
        f"{config_dir() / 'backbone' / 'resnet18.yaml'}"
        " (which Hydra would use) and my_configs/backbone/resnet18.yaml (ignored). Rename your file, e.g. to "
        "my_resnet18.yaml"
    )


def test_the_table_names_outputs_under_their_keys_and_shows_reinit(workdirs):
    """With output_names: torchvision and no neck the returned stages are the outputs '0' and '1' (what the
    forward returns); the table marked them under their stage names only. reinit is in the title."""
    cwd, tmp = workdirs
    args = ["backbone=resnet18", "input.height=64", "input.width=64", "run=false", "backbone.output_names=torchvision"]
    result = _run_app([*args, "backbone.out_features=[c4,c5]", "backbone.reinit=[c5]"], cwd, tmp)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("| frozen stages: 1 | reinit: c5")
    name, covers = lines[1].index("name"), lines[1].index("covers")  # the columns, from the header
    marks = {line[name:covers].strip(): line[:name].strip() for line in lines[3:7]}  # stage -> the output column
    assert marks == {"c2": "", "c3": "", "c4": "* as 0", "c5": "* as 1"}
    backbone = featx.build("resnet18", overrides=["output_names=torchvision", "out_features=[c4,c5]", "device=meta"])
    assert list(backbone(torch.empty(1, 3, 64, 64, device="meta"))) == ["0", "1"]


def test_a_sweep_prints_no_launcher_messages_unless_verbose(workdirs):
    """Hydra's launcher announced the sweep and its first job on stdout, between featx's tables, before the first
    job quieted other libraries' loggers."""
    cwd, tmp = workdirs
    sweep = ["-m", "backbone=resnet18,mobilenet_v3_small", "run=false"]
    quiet = _run_app(sweep, cwd, tmp)
    assert quiet.returncode == 0, quiet.stderr
    assert "[HYDRA]" not in quiet.stdout + quiet.stderr and quiet.stdout.startswith("featx backbone=resnet18 ")
    verbose = _run_app([*sweep, "-v"], cwd, tmp)
    assert verbose.returncode == 0 and "[HYDRA] Launching 2 jobs locally" in verbose.stdout


def test_hydras_version_is_printed_once(workdirs):
    """featx reads the command line with Hydra's own parser first, whose --version printed the version there too."""
    cwd, tmp = workdirs
    result = _run_app(["--version"], cwd, tmp)
    assert result.returncode == 0 and result.stdout.count("Hydra ") == 1, result.stdout


NO_TORCH_CHECK = """
import sys
import importlib
module, app, arguments = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.argv = [app, *arguments]
try:
    importlib.import_module(module).main()
except SystemExit:
    pass
print(sorted(name for name in ("torch", "torchvision") if name in sys.modules))
"""


@pytest.mark.parametrize(
    "app, arguments",
    [
        ("featx", ["--help"]),
        ("featx", ["-sc", "query=bash"]),
        ("featx-export", ["--cfg", "job"]),
        ("featx-extract", ["backbone=resnet19"]),
        ("featx", ["--version"]),
        ("featx-list", ["--help"]),
        ("featx-list", ["backbone=vgg16"]),
        ("featx-list", ["--config-dir", "absent"]),
        ("featx-propose", ["--help"]),
        ("featx-propose", ["resnet50", "--fpn", "wide"]),
    ],
)
def test_help_completion_and_refused_command_lines_never_import_torch(app, arguments, tmp_path):
    """Each TAB press runs `featx -sc query=...`: importing torch and torchvision made every one take seconds."""
    env = {**os.environ, "COMP_LINE": "featx backbone=resnet1", "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_CHECK, APP_MODULES[app], app, *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:] + done.stderr[-2000:]


def _elsewhere(cwd: Path) -> Path:
    """A folder of the user's beside the run folder, holding a file of theirs (target.txt)."""
    elsewhere = cwd / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "target.txt").write_text("mine\n")
    return elsewhere


LOG_FILE_CASES = [
    (  # Hydra made the file and appended the run's log to it
        "absolute",
        ["hydra.job_logging.handlers.file.filename={w}/elsewhere/outside.log"],
        "hydra.job_logging.handlers.file.filename: Hydra would write this run's log to {w}/elsewhere/outside.log, "
        "outside the run folder {w}/run; give a file name below ${{hydra.runtime.output_dir}} (the default is "
        "${{hydra.runtime.output_dir}}/${{hydra.job.name}}.log)",
    ),
    (  # relative to the working directory, as Python's logging opens it
        "relative",
        ["hydra.job_logging.handlers.file.filename=elsewhere/outside.log"],
        "hydra.job_logging.handlers.file.filename: Hydra would write this run's log to elsewhere/outside.log, "
        "outside the run folder {w}/run;",
    ),
    (
        "climbing",
        ["hydra.job_logging.handlers.file.filename=${{hydra.runtime.output_dir}}/../elsewhere/outside.log"],
        "hydra.job_logging.handlers.file.filename: Hydra would write this run's log to "
        "{w}/run/../elsewhere/outside.log, outside the run folder {w}/run;",
    ),
    (  # a handler of the user's own: every handler with a file name is checked, not only Hydra's "file"
        "added-handler",
        ["+hydra.job_logging.handlers.copy={{class:logging.FileHandler,filename:{w}/elsewhere/target.txt,mode:w}}"],
        "hydra.job_logging.handlers.copy.filename: Hydra would write this run's log to {w}/elsewhere/target.txt, "
        "outside the run folder {w}/run;",
    ),
    (
        "environment",
        ["hydra.job_logging.handlers.file.filename=${{oc.env:HOME}}/outside.log"],
        "hydra.job_logging.handlers.file.filename: ${{oc.env:HOME}}/outside.log refers to other values than the run "
        "folder (${{hydra.runtime.output_dir}}) and the job's name and number; featx checks where Hydra writes a log "
        "before it does, which it can for those alone",
    ),
    (  # the link at a name of the user's (Hydra's own <job>.log was the only one checked): mode w emptied target.txt
        "link",
        [
            "hydra.job_logging.handlers.file.filename=${{hydra.runtime.output_dir}}/linked.log",
            "+hydra.job_logging.handlers.file.mode=w",
        ],
        "{w}/run/linked.log is a link, and Hydra would write this run's linked.log through it into a file elsewhere",
    ),
    (  # each job's own log, resolved with the job's folder and number: checked before the first job runs
        "sweep-job",
        [
            "-m",
            "hydra.sweep.dir=sweep",
            "backbone=resnet18,mobilenet_v3_small",
            "hydra.job_logging.handlers.file.filename=${{hydra.runtime.output_dir}}/../../elsewhere/${{hydra.job.num}}",
        ],
        "hydra.job_logging.handlers.file.filename: Hydra would write this run's log to "
        "{w}/sweep/0/../../elsewhere/0, outside the run folder {w}/sweep/0;",
    ),
]


@pytest.mark.parametrize(("arguments", "message"), [c[1:] for c in LOG_FILE_CASES], ids=[c[0] for c in LOG_FILE_CASES])
def test_a_log_file_outside_the_run_folder_or_through_a_link_is_refused(workdirs, arguments, message):
    """Hydra's logging opens each handler's file as the job starts: a file name outside the run folder (any handler,
    any form) made or appended to a file there, and a link at a name other than Hydra's <job>.log was written
    through (emptied, with mode w)."""
    cwd, tmp = workdirs
    elsewhere = _elsewhere(cwd)
    (cwd / "run").mkdir()
    (cwd / "run" / "linked.log").symlink_to(elsewhere / "target.txt")
    before = folder_state(elsewhere)
    given = [argument.format(w=cwd) for argument in arguments]
    result = _run_app([*given, "backbone=resnet18", "run=false", "hydra.run.dir=run"], cwd, tmp)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("featx: error: " + message.format(w=cwd)) and result.stderr.count("\n") == 1, (
        result.stderr
    )
    assert folder_state(elsewhere) == before
    assert not (cwd / "sweep" / "0").exists()


def test_a_hydra_logging_file_outside_the_run_folder_is_refused(workdirs):
    """Hydra's own logging (hydra_logging) set by a group file of the user's with a ``_global_`` package (which
    featx does not read before Hydra composes) is checked as the job's is: its handler names the key."""
    cwd, tmp = workdirs
    _elsewhere(cwd)
    (cwd / "cd" / "mygroup").mkdir(parents=True)
    (cwd / "cd" / "mygroup" / "x.yaml").write_text(
        "# @package _global_\nhydra:\n  hydra_logging:\n    handlers:\n      extra: {class: logging.FileHandler, "
        f"filename: {cwd}/elsewhere/h.log}}\n"
    )
    arguments = ["--config-dir", str(cwd / "cd"), "+mygroup=x", "backbone=resnet18", "run=false", "hydra.run.dir=run"]
    result = _run_app(arguments, cwd, tmp)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("featx: error: hydra.hydra_logging.handlers.extra.filename: "), result.stderr


def test_log_files_inside_the_run_folder_are_written_there(workdirs):
    """The forms featx resolves before Hydra does: the run folder (either spelling), the job's name and number."""
    cwd, tmp = workdirs
    copy = "+hydra.job_logging.handlers.copy={class:logging.FileHandler,filename:'${hydra:runtime.output_dir}/c.log'}"
    result = _run_app([copy, "backbone=resnet18", "run=false", "hydra.run.dir=run"], cwd, tmp)
    assert result.returncode == 0, result.stderr
    assert (cwd / "run" / "c.log").is_file() and (cwd / "run" / "main.log").is_file()
    log = "hydra.job_logging.handlers.file.filename=${hydra.runtime.output_dir}/${hydra.job.name}-${hydra.job.num}.log"
    result = _run_app(
        ["-m", "backbone=resnet18,mobilenet_v3_small", "run=false", "hydra.sweep.dir=sweep", log], cwd, tmp
    )
    assert result.returncode == 0, result.stderr
    assert sorted(str(path.relative_to(cwd)) for path in cwd.glob("sweep/*/*.log")) == [
        "sweep/0/main-0.log",
        "sweep/1/main-1.log",
    ]


def test_a_sweep_leaves_the_other_entries_of_its_folder_alone(workdirs):
    """Every entry of the sweep folder was taken for a job folder: a link to the project's data and another app's
    run folder (its .hydra/config.yaml) were refused, though the jobs write to sweep/0 and sweep/1 alone."""
    cwd, tmp = workdirs
    (cwd / "datastore").mkdir()
    sweep = cwd / "sweep"
    (sweep / "experiments" / ".hydra").mkdir(parents=True)
    (sweep / "experiments" / ".hydra" / "config.yaml").write_text("lr: 0.1\n")
    (sweep / "data").symlink_to("../datastore")
    (sweep / "2").write_text("not a job of this sweep\n")  # two jobs: 0 and 1
    (sweep / "7").symlink_to("../datastore")
    before = folder_state(sweep)
    result = _run_app(["-m", "backbone=resnet18,mobilenet_v3_small", "run=false", "hydra.sweep.dir=sweep"], cwd, tmp)
    assert result.returncode == 0, result.stderr
    assert {name: state for name, state in folder_state(sweep).items() if name in before} == before
    assert (sweep / "0" / ".hydra" / "config.yaml").is_file() and (sweep / "1" / ".hydra" / "config.yaml").is_file()
    assert list((cwd / "datastore").iterdir()) == []


JOB_FOLDER_CASES = [
    (  # Hydra's mkdir stopped the sweep at that job: "featx: error: sweep/1: File exists", job 0 run
        "file",
        ["backbone=resnet18,mobilenet_v3_small"],
        ("sweep/1", None),
        "{w}/sweep/1 is not a folder, where job #1 of this sweep keeps its logs; remove it or give another folder "
        "with hydra.sweep.dir",
    ),
    (  # a glob's jobs counted as Hydra's sweeper lists them (three backbones)
        "glob",
        ["backbone=glob(res*_fpn)"],
        ("sweep/2", None),
        "{w}/sweep/2 is not a folder, where job #2 of this sweep keeps its logs;",
    ),
    (
        "subfolder",
        ["backbone=resnet18,mobilenet_v3_small", "hydra.sweep.subdir=runs/${{hydra.job.num}}"],
        ("sweep/runs", None),
        "{w}/sweep/runs is not a folder, where job #0 of this sweep keeps its logs;",
    ),
    (  # refused before the first job runs, not as the second starts
        "link",
        ["backbone=resnet18,mobilenet_v3_small"],
        ("sweep/1", "elsewhere"),
        "{w}/sweep/1 is a link, and a job of this sweep would write its logs through it into a folder elsewhere",
    ),
    (  # a config's own hydra.sweeper.params sweep with the command line's: 2 x 2 jobs
        "sweeper-params",
        ["-cd", "mine", "-cn", "heights", "backbone=resnet18,mobilenet_v3_small"],
        ("sweep/3", None),
        "{w}/sweep/3 is not a folder, where job #3 of this sweep keeps its logs;",
    ),
]


@pytest.mark.parametrize(
    ("arguments", "plant", "message"), [c[1:] for c in JOB_FOLDER_CASES], ids=[c[0] for c in JOB_FOLDER_CASES]
)
def test_a_file_or_link_where_a_job_folder_goes_is_refused_before_any_job_runs(workdirs, arguments, plant, message):
    cwd, tmp = workdirs
    elsewhere = _elsewhere(cwd)
    (cwd / "mine").mkdir()
    (cwd / "mine" / "heights.yaml").write_text(
        "defaults: [config, _self_]\nhydra: {sweeper: {params: {input.height: '64,96'}}}\n"
    )
    path, target = cwd / plant[0], plant[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    if target is None:
        path.write_text("mine\n")
    else:
        path.symlink_to(cwd / target)
    before = folder_state(cwd)
    given = [argument.format(w=cwd) for argument in arguments]
    result = _run_app(["-m", *given, "run=false", "hydra.sweep.dir=sweep"], cwd, tmp)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("featx: error: " + message.format(w=cwd)) and result.stderr.count("\n") == 1, (
        result.stderr
    )
    assert folder_state(cwd) == before and list(elsewhere.iterdir()) == [elsewhere / "target.txt"]


def test_a_sweeper_whose_jobs_featx_cannot_list_is_refused(workdirs):
    """featx checks each job's folder from the jobs Hydra's basic sweeper lists; another sweeper's are unknown (an
    invalid one was Hydra's RuntimeError with a traceback)."""
    cwd, tmp = workdirs
    sweeper = "hydra.sweeper._target_=collections.OrderedDict"
    result = _run_app(["-m", "backbone=resnet18", "run=false", "hydra.sweep.dir=sweep", sweeper], cwd, tmp)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "featx: error: hydra.sweeper: collections.OrderedDict is not Hydra's basic sweeper, whose jobs featx lists to "
        "check each job's folder before Hydra writes in it; leave hydra/sweeper at basic\n",
    )
    assert not (cwd / "sweep").exists()


def test_a_launcher_hydra_cannot_load_is_one_error_line_naming_it(workdirs):
    """Hydra refuses a launcher outside its plugins with a RuntimeError, which was a traceback."""
    cwd, tmp = workdirs
    launcher = "hydra.launcher._target_=collections.OrderedDict"
    result = _run_app(["-m", "backbone=resnet18", "run=false", "hydra.sweep.dir=sweep", launcher], cwd, tmp)
    assert (result.returncode, result.stdout, result.stderr) == (
        1,
        "",
        "featx: error: RuntimeError: Invalid plugin 'collections.OrderedDict': not the hydra_plugins package, raised "
        f"by Hydra's own code given the Hydra settings hydra.sweep.dir=sweep {launcher} (HYDRA_FULL_ERROR=1 shows "
        "where)\n",
    )
    assert not (cwd / "sweep").exists()


#: the featx app (``python -c DROPPED_INTERRUPT MODE MODULE ARGUMENTS``) sent a Ctrl-C as it first imports MODULE:
#: MODE "raised" lets the KeyboardInterrupt go (numpy: torch's C code, importing it, drops it); "dropped" drops it, as
#: torch does, and the import goes on; "import-error" drops it and fails the import, as numpy's did once ("cannot
#: load module more than once per process")
DROPPED_INTERRUPT = """
import importlib.abc, signal, sys

class Interrupt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == module and not sent:
            sent.append(name)
            print("SIGINT as", name, "is imported", file=sys.stderr)
            if mode == "raised":
                signal.raise_signal(signal.SIGINT)
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                if mode == "import-error":
                    raise ImportError("cannot load module more than once per process") from None
        return None

mode, module, sent = sys.argv.pop(1), sys.argv.pop(1), []
sys.argv[0] = "featx"
sys.meta_path.insert(0, Interrupt())
from featx.cli.main import main
main()
"""


def _run_interrupted(mode, module, arguments, cwd, tmp, sigint=signal.SIG_DFL):
    """The featx app run as :data:`DROPPED_INTERRUPT` says, SIGINT's disposition at its start ``sigint``."""
    return subprocess.run(
        [sys.executable, "-c", DROPPED_INTERRUPT, mode, module, *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(tmp), "HYDRA_FULL_ERROR": "0"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
        timeout=300,
    )


SWEEP = ["-m", "backbone=resnet18,resnet34", "hydra.sweep.dir=sweep"]


@pytest.mark.parametrize(
    ("mode", "module", "arguments", "tables"),
    [
        ("raised", "numpy", SWEEP, [0, 1]),  # torch's import: 1 where torch drops it
        ("dropped", "featx.cli.report", SWEEP, [1]),  # the job it came in ends
        ("dropped", "featx.cli.report", ["backbone=resnet18"], [1]),
        ("import-error", "featx.cli.report", ["backbone=resnet18"], [0]),  # in the job
        ("import-error", "hydra._internal.logging_config", ["backbone=resnet18"], [0]),  # in Hydra's, before it
    ],
)
def test_a_ctrl_c_whose_keyboard_interrupt_was_dropped_still_ends_the_app(workdirs, mode, module, arguments, tables):
    """A Ctrl-C in the first second lands in torch's import, whose C code drops the KeyboardInterrupt: the app ran
    on to its end (status 0, every table of a sweep printed), or ended in numpy's ImportError traceback."""
    cwd, tmp = workdirs
    result = _run_interrupted(mode, module, [*arguments, "run=false"], cwd, tmp)
    lines = result.stderr.splitlines()
    assert lines[0] == f"SIGINT as {module} is imported", result.stderr[-2000:]
    assert (result.returncode, lines[1:]) == (130, ["featx: interrupted"]), result.stderr[-2000:]
    assert result.stdout.count("\nfeatx backbone=") + result.stdout.startswith("featx backbone=") in tables


def test_an_app_started_with_ctrl_c_ignored_leaves_it_ignored(workdirs):
    """A command a script runs in the background (``featx ... &``) starts with SIGINT ignored: a Ctrl-C meant for
    the terminal's foreground job does not stop it."""
    cwd, tmp = workdirs
    result = _run_interrupted(
        "dropped", "featx.cli.report", ["backbone=resnet18", "run=false"], cwd, tmp, signal.SIG_IGN
    )
    assert (result.returncode, result.stderr) == (0, "SIGINT as featx.cli.report is imported\n"), result.stderr[-2000:]
    assert result.stdout.startswith("featx backbone=resnet18 (resnet18)")


def _completions(line: str, cwd: Path, tmp: Path) -> subprocess.CompletedProcess:
    """What the featx app's bash completion (``featx -sc query=bash``) offers for the command line ``line``."""
    env = {**os.environ, "TMPDIR": str(tmp), "COMP_LINE": line, "COMP_POINT": str(len(line))}
    return run_in_process("featx", ["-sc", "query=bash"], cwd, env)


def test_completion_reads_the_config_folder_and_name_of_the_line_being_completed(workdirs):
    """The completion read --config-dir and --config-name from its own call (`featx -sc query=bash`, none), not from
    the line: a backbone of the user's folder was refused, and nothing was offered."""
    cwd, tmp = workdirs
    (cwd / "mine" / "backbone").mkdir(parents=True)
    (cwd / "mine" / "backbone" / "cl.yaml").write_text(
        "defaults: [/featx/backbone_schema@_here_, _self_]\nmodel: resnet18\nchannels_last: true\n"
    )
    (cwd / "mine" / "small.yaml").write_text("defaults: [config, _self_]\ninput: {height: 32}\n")
    offered = {
        line: _completions(line, cwd, tmp).stdout.split()
        for line in [
            "featx --config-dir mine backbone=cl backbone.ch",
            "featx -cd mine backbone=cl",
            "featx --config-dir mine --config-name small backbone=resnet18 input.height=",
            "featx backbone=resnet18 input.height=",
        ]
    }
    assert list(offered.values()) == [
        ["backbone.channels_last="],
        ["backbone=cl"],
        ["input.height=32"],
        [],  # featx's config: null
    ]
    for line in [
        "featx --config-dir absent backbone=resnet18 backbone.ch",  # a folder that is not there
        "featx --config-dir mine --config-name ../mine/small backbone.ch",  # a config name that is a path
        "featx --config-path mine backbone.ch",  # refused by the app
    ]:
        done = _completions(line, cwd, tmp)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", ""), (line, done.stdout, done.stderr[-2000:])


@pytest.mark.parametrize("word", ["backbone=../", "backbone=/", "backbone=./", "+hydra/launcher=/e", "backbone=~/"])
def test_completion_offers_no_files_for_a_config_group_choice(workdirs, word):
    """Hydra completes a choice that starts like a path with the files of that folder: /tmp's contents were offered
    for `backbone=../`, outside the config roots (a group's options are names in them)."""
    cwd, tmp = workdirs
    (cwd / "afile.yaml").write_text("model: resnet18\n")
    done = _completions(f"featx run=false {word}", cwd, tmp)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", ""), (done.stdout, done.stderr[-2000:])


def test_completion_still_offers_files_for_a_path_value(workdirs):
    cwd, tmp = workdirs
    (cwd / "photos").mkdir()
    done = _completions("featx hydra.run.dir=./pho", cwd, tmp)
    assert (done.returncode, done.stdout.split()) == (0, ["hydra.run.dir=./photos"]), done.stderr[-2000:]
