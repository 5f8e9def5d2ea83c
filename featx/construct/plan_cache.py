"""The plan cache: a spec's plan (stages, channels, strides, kept paths, token layout) stored as JSON, so that
``featx.build``, ``featx-list`` and ``featx run=false`` skip planning a spec planned before.

An entry is looked up among the plans packaged with featx (``featx/plans/``, made by ``scripts/make_plans.py``
for the packaged specs), then in the user cache: ``$FEATX_CACHE_DIR/plans``, else ``$XDG_CACHE_HOME/featx/plans``,
else ``~/.cache/featx/plans``; ``FEATX_NO_CACHE=1`` turns both off. An entry's file name is a hash of the spec's
planning keys (:data:`PLAN_KEYS`) and the versions (featx's with a hash of its planning code, torch's, torchvision's
and, for a timm model, timm's); the entry repeats both and is used only when they match exactly, its checksum
matches, its plan has the form featx writes and (in a build) the model has the structure the plan was made from. A
corrupt, malformed or edited file at an entry's name is ignored and rewritten (entries of other versions have other
names and are left alone); a cache folder that cannot be written, or no home folder, leaves builds uncached; a
model whose builder is not its library's own code is never cached. JSON only, never pickle: reading an entry runs
nothing.

Example::

    plan = cached_plan(spec, lambda model: plan_backbone(spec, model), lambda: MetaModel.create(spec.model).model)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torchvision
from torch import nn
from torch.nn.modules import module as module_hooks

from featx.cache_folder import cache_disabled, is_own_regular_file, user_cache_dir
from featx.construct.model_structure import structure_fingerprint
from featx.construct.plan import BackbonePlan
from featx.construct.plan_data import plan_from_data, plan_to_data
from featx.errors import FeatxError
from featx.files import write_atomically
from featx.models.registry import defined_by_library, is_timm_model
from featx.spec.schema import BackboneSpec
from featx.version import __version__

#: the spec keys planning reads, and the only ones: a plan is reused for any spec that agrees on them
PLAN_KEYS = ("model", "source", "stages", "out_features", "input_size", "layout", "tokens")
#: the form of an entry; a change of form makes every older entry stale
ENTRY_FORMAT = 3
#: an entry's fields, and no others
ENTRY_FIELDS = ("format", "inputs", "versions", "structure", "plan", "checksum")
#: the largest entry read (plans of the largest models are tens of kilobytes)
MAX_ENTRY_BYTES = 4 * 2**20
PACKAGE = Path(__file__).resolve().parent.parent
PACKAGED_PLANS = PACKAGE / "plans"


def plan_inputs(spec: BackboneSpec) -> Dict[str, Any]:
    """The values of :data:`PLAN_KEYS` in ``spec``, as plain data; the stages as a list of ``[name, stage]`` in the
    spec's order (which decides what is refused: a mapping would lose it in the key and in the comparison)."""
    data = spec.to_dict()
    inputs = {key: data[key] for key in PLAN_KEYS}
    inputs["stages"] = [[name, stage] for name, stage in data["stages"].items()]
    return inputs


def user_plans_dir() -> Optional[Path]:
    """Where plans made on this machine are kept: ``plans`` in featx's cache folder
    (:func:`~featx.cache_folder.user_cache_dir`), or None where there is none."""
    folder = user_cache_dir()
    return None if folder is None else folder / "plans"


#: local version labels that name a build variant (``2.14.1+cu130``, ``+cpu``, ``+rocm6.2``, ``+xpu``): the same
#: code, so the same plans; any other label (a source build's ``+git4f1a2b3``) tells code apart and stays
_BUILD_VARIANT = re.compile(r"(cu\d+|cpu|rocm[\d.]*|xpu)(\.cxx11\.abi)?")


def _release(version_text: str) -> str:
    """``version_text`` without a build-variant label: ``2.14.1+cu130`` → ``2.14.1``; ``0.30.0a0+4f1a2b3`` stays."""
    public, _, label = version_text.partition("+")
    return public if not label or _BUILD_VARIANT.fullmatch(label) else version_text


def _timm_version() -> Optional[str]:
    """timm's version where the timm Python imports is the installed distribution's code (its metadata's version,
    its files; with the commit of an install from a repository); None where it is not (a timm checkout on
    ``sys.path``, an editable install or one from a folder or archive, a mismatched module), whose plans are then
    never cached: its code may change under one version."""
    try:
        installed = distribution("timm")
    except PackageNotFoundError:
        return None
    module = sys.modules.get("timm")
    if module is not None:
        origin = getattr(module, "__file__", None)
        if getattr(module, "__version__", None) != installed.version:
            return None
    else:
        found = importlib.util.find_spec("timm")
        origin = found.origin if found is not None else None
    expected = Path(str(installed.locate_file("timm/__init__.py")))
    try:
        if origin is None or not expected.is_file() or not expected.samefile(origin):
            return None
    except OSError:  # an origin that is no file (inside a zip archive)
        return None
    source = installed.read_text("direct_url.json")  # PEP 610: installed from a URL, a folder or a repository
    if source is None:
        return _release(installed.version)
    commit = _commit(source)
    return f"{_release(installed.version)} {commit}" if commit is not None else None


def _commit(direct_url: str) -> Optional[str]:
    """The commit a ``direct_url.json`` records for an install from a repository (``pip install git+...``, every
    commit of one branch under one version), or None for a local folder or an archive, whose code cannot be told
    apart."""
    try:
        source = json.loads(direct_url)
    except ValueError:
        return None
    vcs = source.get("vcs_info") if type(source) is dict else None
    commit = vcs.get("commit_id") if type(vcs) is dict else None
    return commit if type(commit) is str and re.fullmatch(r"[0-9a-fA-F]{7,64}", commit) else None


#: featx's modules whose code decides what a plan holds (or whether a spec is refused): a change to any of them
#: makes every entry stale, also where featx's version stays the same (an editable install). This module and
#: plan_data.py decide where an entry is and its form, not what a plan holds (a change of form bumps ENTRY_FORMAT).
PLANNING_MODULES = (
    "construct/execution_order.py",
    "construct/members.py",
    "construct/plan.py",
    "construct/probe.py",
    "construct/token_layout.py",
    "models/meta_construction.py",
    "models/registry.py",
    "models/timm_models.py",
    "nn/feature_info.py",
    "nn/neck_levels.py",
    "nn/tokens.py",
)


@functools.lru_cache(maxsize=None)
def _library_versions() -> Optional[Dict[str, str]]:
    """featx's version (of the code running, also from a checkout that is not installed) and a hash of its planning
    code, torch's and torchvision's; None for a featx without its sources, which is then never cached."""
    try:
        planner = hashlib.sha256(b"".join((PACKAGE / module).read_bytes() for module in PLANNING_MODULES))
    except OSError:  # installed without its sources: the planner cannot be told apart
        return None
    return {
        "featx": _release(__version__),
        "featx planner": planner.hexdigest()[:16],
        "torch": _release(torch.__version__),
        "torchvision": _release(torchvision.__version__),
    }


def plan_versions(model: str) -> Optional[Dict[str, Optional[str]]]:
    """The library versions a plan of ``model`` depends on; None where they cannot be known (then nothing is cached):
    a featx without its sources, or a timm model where the timm imported is not an installed release's code."""
    libraries = _library_versions()
    if libraries is None:
        return None
    versions: Dict[str, Optional[str]] = dict(libraries)
    if is_timm_model(model):
        versions["timm"] = _timm_version()
        if versions["timm"] is None:
            return None
    return versions


def entry_key(inputs: Dict[str, Any], versions: Mapping[str, Optional[str]]) -> str:
    """The file name stem of the entry for planning ``inputs`` under ``versions``."""
    canonical = json.dumps({"format": ENTRY_FORMAT, "inputs": inputs, "versions": versions}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def _checksum(entry: Mapping[str, Any]) -> str:
    """A hash of the entry's other fields: an entry edited by hand (or damaged) no longer matches it. It is no
    signature: anyone who can write the cache folder can write a matching one, so the folder must be as trusted as
    the installed code (:func:`_read` takes only the user's own files from it)."""
    fields = {key: entry.get(key) for key in ENTRY_FIELDS if key != "checksum"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _read(
    path: Path, inputs: Dict[str, Any], versions: Mapping[str, Optional[str]], spec: BackboneSpec, own: bool
) -> Optional[Tuple[BackbonePlan, str]]:
    """The plan in the entry at ``path`` and the structure fingerprint of the model it was made from, or None if
    there is none or it is unreadable, stale, malformed, edited or (with ``own``: the user cache) not the user's own
    file."""
    try:
        if not is_own_regular_file(path, own):
            return None
        with open(path, "rb") as handle:
            data = handle.read(MAX_ENTRY_BYTES + 1)
        if len(data) > MAX_ENTRY_BYTES:
            return None
        entry = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if type(entry) is not dict or sorted(entry) != sorted(ENTRY_FIELDS) or entry["format"] != ENTRY_FORMAT:
        return None
    if entry["inputs"] != inputs or entry["versions"] != versions or entry["checksum"] != _checksum(entry):
        return None
    structure = entry["structure"]
    if type(structure) is not str or not re.fullmatch(r"[0-9a-f]{64}", structure):
        return None
    try:
        return plan_from_data(entry["plan"], spec), structure
    except ValueError:
        return None


def entry_data(
    spec: BackboneSpec, plan: BackbonePlan, versions: Mapping[str, Optional[str]], structure: str
) -> Dict[str, Any]:
    """The whole entry for ``spec``'s ``plan``, made under ``versions`` from a model of fingerprint ``structure``:
    form, planning inputs, versions, structure, plan and their checksum."""
    entry = {
        "format": ENTRY_FORMAT,
        "inputs": plan_inputs(spec),
        "versions": dict(versions),
        "structure": structure,
        "plan": plan_to_data(plan),
    }
    return {**entry, "checksum": _checksum(entry)}


def write_entry(
    folder: Path, spec: BackboneSpec, plan: BackbonePlan, versions: Mapping[str, Optional[str]], structure: str
) -> Path:
    """Write the entry of ``spec``'s ``plan`` into ``folder`` (whole or not at all, replacing whatever file is at its
    name: a corrupt or malformed entry), readable by all and writable by the user alone; its path."""
    entry = entry_data(spec, plan, versions, structure)
    text = json.dumps(entry, indent=1, sort_keys=True) + "\n"
    path = folder / f"{entry_key(entry['inputs'], entry['versions'])}.json"

    def write(partial: Path) -> None:
        partial.write_text(text, encoding="utf-8")
        partial.chmod(0o644)  # whatever the umask: an entry other users could rewrite is never read

    return write_atomically(path, write, overwrite=True, what="plan")


def _has_paths(model: nn.Module, paths: Sequence[str]) -> bool:
    modules, parameters = dict(model.named_modules()), dict(model.named_parameters())
    return all(path in modules or path in parameters for path in paths)


def _hooks_on_every_module() -> bool:
    """Whether hooks that torch runs around every module's forward are registered
    (``torch.nn.modules.module.register_module_forward_hook`` and ``..._pre_hook``): they change what the stages
    compute while no class changes, so no entry made without them (or with others) can be known to describe it."""
    return bool(module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks)


def cached_plan(
    spec: BackboneSpec,
    plan_model: Callable[[nn.Module], BackbonePlan],
    model: Union[nn.Module, Callable[[], nn.Module]],
) -> BackbonePlan:
    """``spec``'s plan from the cache if an entry there is valid, else ``plan_model(model)`` (stored in the user
    cache when it can be written).

    ``model`` is the spec's model on the meta device, or a function that constructs it. Given the model (a build),
    an entry is used only if it was made from a model of the same structure (:func:`structure_fingerprint`: a
    library class patched at run time changes it) and every module it names exists (and no entry is used or
    written while hooks on every module's forward are registered); given the function
    (``featx-list``), a packaged plan is taken on its keys and versions, and the model is constructed only to check
    an entry of the user cache (a process that patched a library class may have written it) or on a miss. A
    model whose builder is not its library's own code (registered or wrapped by the user's code, also under one of
    timm's names) is never cached, nor looked up among the packaged plans."""
    given = model if isinstance(model, nn.Module) else None

    @functools.cache
    def constructed() -> nn.Module:
        return given if given is not None else model()

    @functools.cache
    def structure() -> str:
        return structure_fingerprint(constructed())

    if cache_disabled() or _hooks_on_every_module():
        return plan_model(constructed())
    folder = user_plans_dir()  # FEATX_CACHE_DIR checked for every spec, a packaged plan's too
    versions = plan_versions(spec.model)
    if versions is None or not defined_by_library(spec.model):
        return plan_model(constructed())
    inputs = plan_inputs(spec)
    name = f"{entry_key(inputs, versions)}.json"

    def lookup(folder: Path, own: bool) -> Optional[BackbonePlan]:
        found = _read(folder / name, inputs, versions, spec, own)
        if found is None:
            return None
        plan, made_from = found
        # a packaged plan is taken on its keys where no model is at hand (featx-list); an entry of the user cache is
        # checked against the model, constructed for it then: the process that wrote it may have patched the library
        if given is None and not own:
            return plan
        checked = constructed()
        if made_from != structure() or not _has_paths(checked, plan.kept_paths):
            return None  # made from a model of another structure, or naming modules this one lacks
        return plan

    plan = lookup(PACKAGED_PLANS, own=False)
    if plan is not None:
        return plan
    plan = lookup(folder, own=True) if folder is not None else None
    if plan is not None:
        return plan
    made_from = structure()  # before planning, which runs the model
    plan = plan_model(constructed())
    if folder is None:
        return plan
    try:
        write_entry(folder, spec, plan, versions, made_from)
    except FeatxError:  # a folder that cannot be written: the build goes on uncached
        pass
    return plan
