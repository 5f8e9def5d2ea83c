"""featx's mutation run: plant each bug of MUTANTS in the working tree, run the tests that guard its module, and
report which mutants the suite kills. A surviving mutant is a bug the tests would let through.

Each mutant replaces one exact piece of source (which must occur once) and is undone before the next, also when the
run is interrupted (the original text is written back in a ``finally``; start from a clean ``git status`` to be
sure). Mutants marked equivalent change nothing a user can observe; they are listed with the reason and not run.

    python scripts/mutation.py                        # every mutant; markdown table on stdout
    python scripts/mutation.py --only freezing store  # the mutants of some modules
    python scripts/mutation.py --json out.json        # also the per-mutant results as JSON (after each mutant)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from featx.files import write_atomically

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """``old`` → ``new`` in ``module`` (a path below ``featx/``); ``equivalent`` says why it cannot be observed."""

    module: str
    old: str
    new: str
    bug: str
    equivalent: Optional[str] = None


#: modules whose guards include slow tests (the concurrent writers run as real processes)
RUN_SLOW = {"files.py", "tasks/extract/ranks.py"}
#: the tests that guard each module (a mutant runs only these, stopping at the first failure)
GUARDS: Dict[str, List[str]] = {
    "spec/validate.py": [
        "tests/test_spec_validation.py",
        "tests/test_hostile_spec.py",
        "tests/test_runtime_control.py",
    ],
    "spec/overrides.py": [
        "tests/test_hostile_spec.py",
        "tests/test_loader.py",
        "tests/test_spec_fast_path.py",
        "tests/test_spec_validation.py",
    ],
    "spec/load.py": [
        "tests/test_hostile_spec.py",
        "tests/test_loader.py",
        "tests/test_spec_validation.py",
        "tests/test_checkpoint.py",
    ],
    "spec/typed.py": ["tests/test_spec_fast_path.py"],
    "construct/members.py": ["tests/test_model_checks.py", "tests/test_hostile_spec.py"],
    "construct/execution_order.py": ["tests/test_hostile_spec.py", "tests/test_model_checks.py"],
    "construct/probe.py": [
        "tests/test_model_checks.py",
        "tests/test_neck.py",
        "tests/test_reference_equality.py",
        "tests/test_meta_probe.py",
        "tests/test_timm.py",
    ],
    "construct/weights.py": [
        "tests/test_hostile_weights.py",
        "tests/test_weights.py",
        "tests/test_checkpoint.py",
        "tests/test_hostile_extract.py",
    ],
    "construct/checkpoint.py": ["tests/test_checkpoint.py", "tests/test_hostile_weights.py"],
    "construct/tensor_records.py": ["tests/test_hostile_weights.py"],
    "construct/meta_model.py": ["tests/test_weights.py"],
    "tasks/export.py": ["tests/test_export.py"],
    "construct/builder.py": [
        "tests/test_hostile_spec.py",
        "tests/test_hostile_weights.py",
        "tests/test_plan_cache.py",
        "tests/test_checkpoint.py",
        "tests/test_weights.py",
        "tests/test_runtime_control.py",
    ],
    "construct/model_structure.py": ["tests/test_checkpoint.py", "tests/test_plan_cache.py"],
    "construct/plan.py": [
        "tests/test_plan_cache.py",
        "tests/test_model_checks.py",
        "tests/test_reference_equality.py",
        "tests/test_detection.py",
    ],
    "construct/plan_cache.py": ["tests/test_plan_cache.py"],
    "construct/plan_data.py": ["tests/test_plan_cache.py"],
    "models/library_code.py": ["tests/test_plan_cache.py"],
    "nn/freezing.py": [
        "tests/test_freezing.py",
        "tests/test_runtime_control.py",
        "tests/test_conf_backbones.py",
        "tests/test_timm.py",
    ],
    "nn/backbone.py": [
        "tests/test_freezing.py",
        "tests/test_runtime_control.py",
        "tests/test_hostile_forward.py",
        "tests/test_backbone.py",
        "tests/test_reference_equality.py",
        "tests/test_checkpoint.py",
    ],
    "cli/report.py": ["tests/test_report.py"],
    "nn/fpn.py": ["tests/test_backbone.py", "tests/test_neck.py", "tests/test_reference_equality.py"],
    "nn/neck_levels.py": [
        "tests/test_hostile_spec.py",
        "tests/test_model_checks.py",
        "tests/test_backbone.py",
        "tests/test_detection.py",
    ],
    "nn/tokens.py": ["tests/test_vit.py", "tests/test_timm.py"],
    "nn/simple_pyramid.py": ["tests/test_backbone.py", "tests/test_vit.py"],
    "construct/token_layout.py": ["tests/test_hostile_spec.py", "tests/test_vit.py", "tests/test_timm.py"],
    "construct/propose_tokens.py": ["tests/test_propose.py", "tests/test_timm.py"],
    "tasks/extract/store.py": [
        "tests/test_hostile_extract.py",
        "tests/test_extract.py",
        "tests/test_atomic_writes.py",
        "tests/test_device_decode.py",
    ],
    "tasks/extract/transforms.py": ["tests/test_extract.py", "tests/test_device_decode.py", "tests/test_timm.py"],
    "tasks/extract/listing.py": ["tests/test_hostile_extract.py", "tests/test_extract.py"],
    "tasks/extract/ranks.py": ["tests/test_hostile_extract.py", "tests/test_distributed_extract.py"],
    "tasks/extract/names.py": ["tests/test_hostile_extract.py"],
    "spec/references.py": ["tests/test_hostile_spec.py"],
    "tasks/extract/decode.py": [
        "tests/test_hostile_extract.py",
        "tests/test_extract.py",
        "tests/test_device_decode.py",
    ],
    "tasks/extract/device_decode.py": ["tests/test_device_decode.py"],
    "tasks/extract/run.py": ["tests/test_device_decode.py", "tests/test_extract.py", "tests/test_hostile_extract.py"],
    "cache_folder.py": ["tests/test_plan_cache.py", "tests/test_hostile_weights.py"],
    "files.py": [
        "tests/test_hostile_weights.py",
        "tests/test_atomic_writes.py",
        "tests/test_hostile_extract.py",
        "tests/test_plan_cache.py",
    ],
    "models/published_weights.py": ["tests/test_extract.py", "tests/test_timm.py"],
    "nn/reinit.py": ["tests/test_runtime_control.py"],
    "cli/app.py": ["tests/test_hostile_apps.py", "tests/test_hydra.py"],
    "cli/command_line.py": ["tests/test_hostile_apps.py", "tests/test_hydra.py"],
    "cli/override_checks.py": ["tests/test_hostile_apps.py", "tests/test_hydra.py"],
    "cli/user_configs.py": ["tests/test_hostile_apps.py", "tests/test_hydra.py"],
    "cli/hydra_settings.py": ["tests/test_hostile_apps.py", "tests/test_hydra.py"],
    "cli/hydra_errors.py": ["tests/test_hostile_apps.py", "tests/test_hydra.py"],
    "cli/interrupts.py": ["tests/test_hostile_apps.py", "tests/test_hydra.py"],
    "cli/output_folders.py": ["tests/test_hydra.py", "tests/test_hostile_apps.py", "tests/test_distributed_extract.py"],
    "construct/propose.py": ["tests/test_propose.py", "tests/test_timm.py", "tests/test_timm_families.py"],
    "models/timm_models.py": ["tests/test_timm.py"],
    "models/registry.py": ["tests/test_hostile_spec.py"],
    "models/timm_weights.py": ["tests/test_timm.py", "tests/test_weights.py"],
    "tasks/detection.py": ["tests/test_detection.py"],
    "models/legacy_keys.py": ["tests/test_weights.py"],
    "models/weights_enums.py": ["tests/test_weights.py", "tests/test_hostile_weights.py"],
    "file_records.py": ["tests/test_weights.py", "tests/test_hostile_weights.py"],
    "construct/checked_checkpoints.py": ["tests/test_hostile_weights.py"],
    "nn/tensor_places.py": ["tests/test_backbone.py"],
    "cli/user_backbones.py": ["tests/test_report.py"],
    "models/meta_construction.py": ["tests/test_weights.py", "tests/test_meta_probe.py", "tests/test_timm.py"],
    "cli/export.py": ["tests/test_hostile_apps.py", "tests/test_export.py"],
    "cli/propose.py": ["tests/test_propose.py", "tests/test_atomic_writes.py"],
    "cli/main.py": ["tests/test_hostile_apps.py", "tests/test_hydra.py", "tests/test_report.py"],
    "cli/catalog.py": [
        "tests/test_propose.py",
        "tests/test_timm.py",
        "tests/test_hostile_apps.py",
        "tests/test_plan_cache.py",
        "tests/test_report.py",
    ],
    "spec/config_files.py": ["tests/test_hostile_apps.py"],
    "cli/logs.py": ["tests/test_hydra.py", "tests/test_export.py"],
    "construct/proposal_yaml.py": ["tests/test_timm_families.py", "tests/test_propose.py"],
    "spec/yaml_file.py": ["tests/test_hostile_spec.py", "tests/test_loader.py", "tests/test_spec_validation.py"],
    "spec/limits.py": ["tests/test_hostile_weights.py", "tests/test_hostile_extract.py", "tests/test_hostile_spec.py"],
    "cli/output.py": ["tests/test_hostile_apps.py"],
    "cli/sweeps.py": ["tests/test_hostile_apps.py"],
    "errors.py": ["tests/test_hostile_spec.py", "tests/test_spec_validation.py"],
    "__init__.py": ["tests/test_export.py"],
    "cli/extract.py": ["tests/test_extract.py"],
}

MUTANTS: List[Mutant] = [
    # spec validation
    Mutant("spec/validate.py", "if start < previous_end:", "if start < previous_end - 1:", "overlapping slices pass"),
    Mutant("spec/validate.py", "if start > previous_end:", "if start > previous_end + 1:", "a gap between slices"),
    Mutant("spec/validate.py", "if end <= start:", "if end < start:", "an empty slice passes"),
    Mutant("spec/validate.py", "if not 0 <= spec.frozen_stages <= len(kept):", "if False:", "frozen_stages unchecked"),
    Mutant("spec/validate.py", "if order != sorted(set(order)):", "if False:", "out_features in any order"),
    Mutant("spec/validate.py", "if not 0 <= spec.seed <= MAX_SEED:", "if spec.seed < 0:", "seed unbounded above"),
    Mutant(
        "spec/validate.py",
        "if not 1 <= spec.fpn.out_channels <= MAX_CHANNELS:",
        "if spec.fpn.out_channels < 1:",
        "fpn width unbounded",
    ),
    # spec loading
    Mutant("spec/overrides.py", "merge=False, force_add=True", "merge=True, force_add=True", "overrides merge"),
    Mutant(
        "construct/weights.py",
        "    if mismatch is not None:",
        "    if False:",
        "a tensor record smaller than its pickle claims is memory-mapped (filled from the records after it)",
    ),
    Mutant(
        "construct/tensor_records.py",
        "        if claimed != held:",
        "        if claimed < held:",
        "a record smaller than its pickle's claim passes the check",
    ),
    Mutant(
        "construct/tensor_records.py",
        'module not in ("torch", "torch.storage")',
        'module != "torch"',
        "untyped storages (float8, uint16) are not read: such files lose memory mapping",
    ),
    Mutant(
        "construct/checkpoint.py",
        "        pending += [(item, index, name) for name, item in reversed(inner)",
        "        pending += [] and [(item, index, name) for name, item in reversed(inner)",
        "a state dict below the top level (an EMA under state_dict) is not counted: one of two networks taken silently",
    ),
    Mutant(
        "construct/checkpoint.py",
        'isinstance(key, str) and "." in key and "/" not in key and isinstance(tensor, torch.Tensor) and tensor.dim()',
        'isinstance(key, str) and "/" not in key and isinstance(tensor, torch.Tensor) and tensor.dim()',
        "a scalar beside state_dict (best_acc1) counts as a second network: a training checkpoint is refused",
    ),
    Mutant(
        "cli/override_checks.py",
        "    return [name for item in value for name in _names(item)] if isinstance(value, list) else []",
        "    return []",
        "a list of config names for a group is not checked: a file outside the config roots is composed and printed",
    ),
    Mutant(
        "cli/user_configs.py",
        '        chosen += [(f"backbone/{name}", None) for pattern in patterns for name in pattern.filter(names)]',
        "        pass",
        "a user's backbone file chosen by glob() is not read first: a non-UTF-8 file is a traceback",
    ),
    Mutant(
        "tasks/extract/run.py",
        '        backbone["weights_digest"] = _weights_digest(cached)',
        "        pass",
        "published weights recorded by name alone: a replaced hub cache file adds another network's features",
    ),
    Mutant(
        "construct/checkpoint.py",
        '    if spec.device == "meta":  # built on meta',
        '    if spec.device == "never":  # built on meta',
        "a meta-built backbone given weights is saved as device: meta, and loads without its weights",
    ),
    Mutant(
        "cli/output_folders.py",
        "            if link is not None:",
        "            if False:",
        "Hydra writes its config copies, log and multirun.yaml through a link planted at their names",
    ),
    Mutant(
        "cli/output_folders.py",
        '        if name in ("", ".", "..") or "/" in name or os.sep in name:',
        '        if name in ("", ".", ".."):',
        "a job name holding a path puts the run's log outside the run folder",
    ),
    Mutant(
        "cli/output_folders.py",
        ' or ".." in Path(str(subdir)).parts):',
        "):",
        "an output_subdir climbing out of the run folder has Hydra write its config copies elsewhere",
    ),
    Mutant(
        "cli/app.py",
        "    if sweeps_started and not _jobs_run:  # -m, or hydra.mode=MULTIRUN",
        "    if False:",
        "a sweep that runs no job (a glob matching nothing) exits 0",
    ),
    Mutant(
        "cli/app.py",
        "    except (ValueError, TypeError, AttributeError, LookupError, AssertionError, RuntimeError) as error:",
        "    except (LookupError,) as error:",
        "what Hydra's own code raises for values it does not check (range step 0) is a traceback",
    ),
    Mutant(
        "cli/output.py",
        "    if sys.stdout is None:  # started with stdout closed",
        "    if False:  # started with stdout closed",
        "an app started with stdout closed (>&-) ends in AttributeError tracebacks",
    ),
    Mutant(
        "construct/weights.py",
        "    return bool((torch.isfinite(tensor) & ~torch.isfinite(tensor.to(dtype))).any())",
        "    return False",
        "a float64 file's values beyond float32 load as inf",
    ),
    Mutant(
        "spec/limits.py",
        "    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)",
        "    return text",
        "names from files printed with their line breaks and terminal escapes (a forged second line)",
    ),
    Mutant(
        "nn/backbone.py",
        " and reference.dtype in _AUTOCAST_CASTS  # never float64 layers",
        "  # never float64 layers",
        "a float32 input to float64 layers passes under autocast (a raw RuntimeError in the first convolution)",
    ),
    Mutant(
        "tasks/export.py",
        "            try:\n                backbone(example)\n",
        "            try:\n                pass\n",
        "an example size the backbone cannot take reaches the exporter (a raw torch RuntimeError)",
    ),
    Mutant(
        "tasks/export.py",
        "        except Exception as error:  # noqa: BLE001 - whatever torch's exporter raises for this model",
        "        except ZeroDivisionError as error:  # noqa: BLE001 - whatever torch's exporter raises for this model",
        "an exporter's own failure reaches the caller as a raw torch exception",
    ),
    Mutant(
        "nn/backbone.py",
        "    if list(stages) != list(spec.stages)[: len(stages)]:",
        "    if False:",
        "a hand-made Backbone whose spec names other stages returns nothing, without a word",
    ),
    Mutant(
        "construct/checkpoint.py",
        "        if all(getattr(saved, field) == getattr(spec, field) for field in STRUCTURE_KEYS):",
        "        if False:",
        "a featx file whose own tensors do not fit advises rebuilding it as saved: what the user just did",
    ),
    Mutant(
        "construct/builder.py",
        '    candidates = [value[len(model) + 1 :]] if value.startswith(model + ".") else []',
        "    candidates = []",
        "timm's model.tag weights name is refused as a missing file without naming the tag it means",
    ),
    Mutant(
        "construct/weights.py",
        "        if any(info.compress_type != zipfile.ZIP_STORED for info in records):",
        "        if False:",
        "a compressed tensor record is memory-mapped: its compressed bytes become the tensor's values",
    ),
    Mutant(
        "construct/tensor_records.py",
        '_PUSH_ARGUMENT = {"BININT", "BININT1", "BININT2", "LONG1", "BINUNICODE"}',
        '_PUSH_ARGUMENT = {"BININT", "BININT1", "BININT2", "LONG1", "BINUNICODE", "SHORT_BINSTRING"}',
        "a byte-string key is read as latin-1 where torch reads UTF-8: the check measures another record",
    ),
    Mutant(
        "construct/weights.py",
        "        if _swapped_on_load(reader):",
        "        if False:",
        "a big-endian file is memory-mapped: keys sharing a record are byteswapped twice (silently wrong values)",
    ),
    Mutant(
        "construct/weights.py",
        "    except (zipfile.BadZipFile, OSError, ValueError) as error:",
        "    except (zipfile.BadZipFile, OSError) as error:",
        "a zip entry name Python cannot decode escapes the record check as a raw UnicodeDecodeError",
    ),
    Mutant(
        "construct/weights.py",
        '        with torch.device("cpu"):\n            module.load_state_dict(own, strict=False, assign=assign)',
        "        with torch.device(torch.get_default_device()):\n"
        "            module.load_state_dict(own, strict=False, assign=assign)",
        "a state's missing batch counters are made on the caller's default device (torch's BatchNorm loader)",
    ),
    Mutant(
        "construct/weights.py",
        '    if reader.has_record("byteorder"):  # type: ignore[attr-defined]',
        '    if "byteorder" in reader.get_all_records():  # type: ignore[attr-defined]',
        "a byte order record named in another case is missed: the big-endian file is memory-mapped",
    ),
    Mutant(
        "construct/meta_model.py",
        'with torch.device("cpu"):  # whatever the caller\'s default device',
        "with torch.device(torch.get_default_device()):",
        "the kept layers are constructed on the caller's default device (meta: the build fails)",
    ),
    Mutant(
        "cli/output_folders.py",
        "        self._check_job_folders(config)",
        "        pass",
        "a sweep's jobs write Hydra's files through links in their folders, or outside the sweep folder",
    ),
    Mutant(
        "spec/overrides.py",
        "        except RecursionError:  # a value Hydra's parser took",
        "        except ZeroDivisionError:  # a value Hydra's parser took",
        "an override value nested deeper than OmegaConf recurses is a raw RecursionError",
    ),
    Mutant(
        "files.py",
        "    return printable(os.fspath(path))",
        "    return os.fspath(path)",
        "a skipped image's name with a line break and terminal escapes forges a log line",
    ),
    Mutant(
        "nn/freezing.py",
        "                layer.reset_running_stats = _statistics_kept  # type: ignore[method-assign]",
        "                pass",
        "update_bn resets the statistics of BatchNorm layers kept in eval (frozen stages, norm: eval) for good",
    ),
    Mutant(
        "nn/backbone.py",
        "[(i.channels, i.stride) for i in takes] != [(r.channels, r.stride) for r in returned]",
        "[i.channels for i in takes] != [r.channels for r in returned]",
        "a neck built for other strides is taken when the widths fit: feature_info names the wrong strides",
    ),
    Mutant(
        "nn/backbone.py",
        "    load_spec(spec.to_dict())  # a spec made by hand",
        "    pass  # a spec made by hand",
        "a hand-made Backbone takes an unchecked spec (frozen_stages=-1 freezes all but the last stage)",
    ),
    Mutant(
        "nn/backbone.py",
        "list(itertools.islice(names, len(by_name) + 1))",
        "list(itertools.islice(names, 2**24))",
        "param_groups reads an endless names iterator without bound",
    ),
    Mutant(
        "spec/overrides.py",
        "if override.value() is not None and current != override.value():",
        "if False:",
        "~key=value deletes the key whatever it holds (weights silently dropped)",
    ),
    Mutant(
        "spec/load.py",
        "    try:\n        _refuse_interpolations(data)\n",
        "    try:\n        pass\n",
        "interpolations in spec data resolved",
    ),
    Mutant(
        "spec/load.py",
        "        _refuse_missing_markers(literal)  # before",
        "        pass  # before",
        "??? takes the key's default",
    ),
    Mutant(
        "construct/execution_order.py",
        "        _check_handed_on(recorded, listed, input_state)\n",
        "        pass\n",
        "an operation between two members that keeps the shape is skipped",
    ),
    Mutant(
        "construct/execution_order.py",
        """handed = [("the model's input", input_state)] + [""",
        """handed = [("the model's input", None)] + [""",
        "an operation on the model's input before the first member is skipped",
    ),
    Mutant(
        "construct/execution_order.py",
        "with_kwargs=True, prepend=True",
        "with_kwargs=True",
        "a forward pre-hook of the model's own refused as an operation",
    ),
    Mutant(
        "construct/plan.py",
        "declared_size=tokens is None and spec.input_size is not None,",
        "declared_size=False,",
        "a forward failing at input_size blamed on a stage",
    ),
    Mutant(
        "nn/reinit.py",
        '            elif type(layer).__name__ == "GlobalResponseNorm":',
        "            elif False:",
        "reinit leaves ConvNeXt-V2's GlobalResponseNorm",
    ),
    Mutant(
        "nn/freezing.py",
        "    type(layer).reset_running_stats(layer)  # mean 0, variance 1",
        "    pass",
        "reinit and reset_parameters() keep the statistics of BatchNorm layers kept in eval (norm: eval, frozen "
        "stages, timm under frozen)",
    ),
    Mutant(
        "nn/backbone.py",
        "        pin_kept_layers(self.stages, self._frozen, self._spec.norm)\n        return super().train(mode)",
        "        return super().train(mode)",
        "update_bn resets the frozen statistics of layers made by convert_sync_batchnorm",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "    return tuple(sorted(name for name in Image.OPEN if name not in _PROGRAM_FORMATS))",
        "    return tuple(sorted(Image.OPEN))",
        "a PostScript file (any name) is run by Ghostscript",
    ),
    Mutant(
        "tasks/extract/decode.py",
        "        if shorter_side * longer > MAX_RESIZED_PIXELS:",
        "        if False:",
        "a strip resized to gigabytes for a wide crop",
    ),
    Mutant(
        "cli/user_configs.py",
        "    if name != own:",
        "    if False:",
        "another app's config as --config-name fails on Hydra's merge error",
    ),
    Mutant(
        "cli/user_configs.py",
        '    if shadow is not None and _first_default(shadow, "") in apps | set(schema_names()):',
        "    if False:",
        "a user's config.yaml meant for featx is silently ignored for featx's own",
    ),
    Mutant(
        "cli/user_configs.py",
        '                chosen += [(name, path) for name, _ in _defaults_entries(content, config.rpartition("/")[0])]',
        "                pass",
        "a resolver in a file a backbone file brings in prints the environment",
    ),
    Mutant(
        "cli/override_checks.py",
        "        setting = override.type in (OverrideType.CHANGE, OverrideType.FORCE_ADD)",
        "        setting = override.type == OverrideType.CHANGE",
        "a bad ++key sweep value stops the sweep midway",
    ),
    Mutant(
        "cli/output_folders.py",
        '        if any("${" in _JOB_NUMBER.sub("", part) for part in parts):',
        "        if False:",
        "a sweep subdir resolving outside the sweep folder (Hydra writes there unchecked)",
    ),
    Mutant(
        "cli/logs.py",
        "        return record.levelno >= logging.ERROR",
        "        return True",
        "torch's symbolic-shape tracebacks printed on a successful export",
    ),
    Mutant(
        "construct/token_layout.py",
        "    sides = dict.fromkeys((evaluation[0], default_crop_size(spec.model)))",
        "    sides = dict.fromkeys((evaluation[0],))",
        "a fixed-size ViT with tokens.stride refuses its own spec",
    ),
    Mutant(
        "construct/token_layout.py",
        "        _check_embedding_takes(model, layout, (spec.input_size[0], spec.input_size[1]), in_channels)",
        "        pass",
        "an input_size a fixed-size token model cannot take blames the stage list",
    ),
    Mutant(
        "construct/propose_tokens.py",
        'path != position and path.rpartition(".")[0] in owners]',
        "path != position]",
        "a head's attention-pooling query taken for a prefix token (SigLIP not proposed)",
    ),
    Mutant(
        "construct/propose.py",
        "            input_size=None if grid is None else [grid * (tokens.stride or patch)] * 2,",
        "            input_size=None,",
        "a one-size ViT proposed as taking any size",
    ),
    Mutant(
        "tasks/extract/decode.py",
        "    image = image.transpose(upright) if upright is not None else image",
        "    image = image",
        "photos left in their stored orientation",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "        found = [match for match in matches if not _is_real_folder(match)]",
        "        found = [match for match in matches if match.is_file() or match.is_symlink()]",
        "a pipe a glob matches dropped without a word",
    ),
    Mutant(
        "tasks/export.py",
        '    return path if format == "exported" else utf8_path(',
        "    return path if True else utf8_path(",
        "a non-UTF-8 export path blamed on torch's exporter",
    ),
    Mutant(
        "construct/checkpoint.py",
        "        if id(current) in seen:",
        "        if len(trail) > 6:",
        "a small file of shared references searched for hours",
    ),
    Mutant(
        "construct/checkpoint.py",
        "        raise error.with_origin(str(checkpoint.path)) from None",
        "        raise",
        "a weights file's own spec error put on the spec being built",
    ),
    Mutant(
        "construct/checkpoint.py",
        "    except (ValueError, RecursionError) as error:",
        "    except (json.JSONDecodeError, RecursionError) as error:",
        "featx metadata with a huge integer: raw ValueError",
    ),
    Mutant(
        "construct/weights.py",
        "    if inflated > max(MAX_INFLATED_BYTES, MAX_INFLATION * file_size):",
        "    if False:",
        "a compressed .pth inflating to gigabytes",
    ),
    Mutant(
        "construct/weights.py",
        "        if other != info.filename:",
        "        if False:",
        "a tensor read from a record whose name differs in case from the pickle's",
    ),
    Mutant(
        "construct/weights.py",
        "        raise UnreadableWeightsError(f\"{key_path('weights')}: cannot read {path}: {quoted(reason)[1:-1]}\") "
        "from None\n    try:\n        problem",
        "        return False\n    try:\n        problem",
        "a zip Python cannot list read by torch without the record checks",
    ),
    Mutant(
        "construct/checkpoint.py",
        '"/" not in key and isinstance(tensor, torch.Tensor) and tensor.dim()',
        "isinstance(tensor, torch.Tensor)",
        "a Lightning checkpoint's best_k_models scores taken for a second network",
    ),
    Mutant(
        "cli/user_configs.py",
        '                *keywords, key = str(key).split() or [""]',
        '                keywords, key = [], str(key).removeprefix("override ").removeprefix("optional ")',
        "a defaults entry with keywords in another order escapes the resolver check",
    ),
    Mutant(
        "cli/user_configs.py",
        '        if "${" in config:',
        "        if False:",
        "a file chosen by interpolation escapes the resolver check",
    ),
    Mutant(
        "cli/user_configs.py",
        'first = None if found is None or found in seen else _first_default(found, name.rpartition("/")[0])',
        'first = None if found is None or found in seen else _first_default(found, "")',
        "a --config-name chain read from the root instead of each file's folder",
    ),
    Mutant("files.py", "        if path.is_symlink():", "        if False:", "--force replaces a symbolic link"),
    Mutant(
        "construct/checkpoint.py",
        'return path.suffix.lower() == ".safetensors"',
        'return path.suffix == ".safetensors"',
        ".SAFETENSORS written with torch.save",
    ),
    Mutant(
        "construct/checkpoint.py",
        "        for key in holders[0]:\n            loaded = loaded[key]",
        "        for key in holders[0][:1]:\n            loaded = loaded[key]",
        "a state dict nested two deep (model.state_dict) is not found",
    ),
    Mutant("cli/app.py", '    os.environ[FULL_ERROR] = "1"  #', "    pass  #", "Hydra's errors printed over lines"),
    Mutant(
        "cli/main.py",
        "from featx.cli.output import reader_may_stop\n",
        "from featx.cli.output import reader_may_stop\nfrom featx.cli.report import format_report, measure\n",
        "featx --help and each tab completion import torch (seconds each)",
    ),
    Mutant(
        "cli/app.py",
        'full_error = users_value == "1"',
        "full_error = users_value is not None",
        "HYDRA_FULL_ERROR=0 shows Hydra's tracebacks",
    ),
    Mutant(
        "cli/command_line.py",
        "    if first in not_apps:",
        "    if False:",
        "--config-name featx_app_schema runs, writing outputs/",
    ),
    Mutant(
        "cli/app.py", 'if os.environ.get("TMPDIR") == "":', "if False:", "an empty TMPDIR puts the run folders under /"
    ),
    Mutant(
        "cli/app.py",
        "if isinstance(cause, OSError) and cause.strerror:",
        "if False:",
        "a log file Hydra cannot open is not named",
    ),
    Mutant(
        "cli/output_folders.py",
        "            if path.is_dir():  # Hydra's logging",
        "            if False:  # Hydra's logging",
        "a folder where Hydra writes its log: Unable to configure handler 'file'",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "        unlisted.extend((folder, MATCHED_FOLDER) for folder in folders)",
        "        pass",
        "folders a glob matches are dropped without a skipped row",
    ),
    Mutant("cli/app.py", "            _check_values(cfg, schema)\n", "", "a deleted or unset app key: traceback"),
    Mutant(
        "cli/override_checks.py",
        "        return [override.value()]\n",
        "        return [override.value()]\n    return []\n",
        "swept values unchecked: a bad one stops the sweep",
    ),
    Mutant(
        "cli/command_line.py",
        "    check_user_backbone_files(app, overrides, config_dirs(flags, overrides), schema)\n",
        "",
        "a broken file of the user's config folder: traceback",
    ),
    # the fast spec path (data OmegaConf would convert or refuse must take OmegaConf's path)
    Mutant("spec/typed.py", "if type(value) is not hint or", "if not isinstance(value, hint) or", "bools as ints"),
    Mutant(
        "spec/typed.py", "            if required:\n                return _REFUSED\n", "", "required keys unchecked"
    ),
    Mutant(
        "spec/typed.py",
        "if not data.keys() <= {name for name, _, _ in fields}:",
        "if False:",
        "unknown keys dropped silently",
    ),
    Mutant(
        "spec/overrides.py",
        "simple = override.type is OverrideType.CHANGE and",
        "simple =",
        "+key and ~key applied as key=",
    ),
    Mutant(
        "spec/overrides.py",
        "node[name] = node = dict(child)",
        "node[name] = node = child",
        "overrides change the caller's data",
    ),
    # the plan cache
    Mutant(
        "construct/plan_cache.py", '"out_features", "input_size"', '"input_size"', "out_features not in the cache key"
    ),
    Mutant("construct/builder.py", "    check_neck(spec, plan)\n", "", "the neck unchecked"),
    Mutant(
        "construct/plan_cache.py",
        'if entry["inputs"] != inputs or entry["versions"] != versions or',
        'if entry["inputs"] != inputs or',
        "entries of other library versions used",
    ),
    Mutant(
        "construct/plan_cache.py",
        'if entry["inputs"] != inputs or entry["versions"] != versions or',
        'if entry["versions"] != versions or',
        "entries of other planning keys used",
    ),
    Mutant(
        "construct/plan_cache.py",
        ' or entry["checksum"] != _checksum(entry):',
        ":",
        "entries edited by hand used",
    ),
    Mutant(
        "cache_folder.py",
        "return status.st_uid == user() and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)",
        "return status.st_uid == user()",
        "entries other users can write used",
    ),
    Mutant(
        "construct/plan_cache.py",
        "made_from != structure() or not _has_paths(checked, plan.kept_paths)",
        "not _has_paths(checked, plan.kept_paths)",
        "a plan used for a model patched at run time",
    ),
    Mutant(
        "construct/plan_cache.py",
        'return f"{_release(installed.version)} {commit}" if commit is not None else None',
        "return _release(installed.version)",
        "a timm installed from a repository keyed by its version alone",
    ),
    Mutant(
        "construct/plan_cache.py",
        '    inputs["stages"] = [[name, stage] for name, stage in data["stages"].items()]\n',
        "",
        "the stages' order not in the key",
    ),
    Mutant(
        "construct/plan_cache.py",
        "if origin is None or not expected.is_file() or not expected.samefile(origin):",
        "if origin is None:",
        "a timm checkout on the path keyed as the installed release",
    ),
    Mutant(
        "construct/plan_cache.py",
        "return public if not label or _BUILD_VARIANT.fullmatch(label) else version_text",
        "return public",
        "a source build's commit dropped from the key",
    ),
    Mutant(
        "construct/plan_data.py",
        "if fixed is not None and max(_pair(fixed)) > MAX_SIDE:",
        "if False:",
        "a cached input size past the limit",
    ),
    Mutant(
        "models/library_code.py",
        'function = getattr(function, "__wrapped__", None)',
        "function = None",
        "a user's builder under a library's own decorator taken as the library's",
    ),
    Mutant(
        "models/library_code.py",
        "if code is None or not os.path.realpath(code.co_filename).startswith(folder):",
        "if code is None:",
        "a user's function wrapping a library builder taken as the library's",
    ),
    Mutant(
        "construct/plan_cache.py",
        "made_from != structure() or not _has_paths(checked, plan.kept_paths)",
        "made_from != structure()",
        "paths unchecked",
    ),
    Mutant("construct/plan_data.py", "type(value) is not int or", "not isinstance(value, int) or", "booleans as ints"),
    Mutant(
        "cache_folder.py",
        "return environment_flag(DISABLE_VARIABLE)",
        "return False",
        "FEATX_NO_CACHE ignored",
    ),
    Mutant(
        "construct/plan_cache.py",
        "plan = lookup(PACKAGED_PLANS, own=False)",
        "plan = None",
        "packaged plans unused",
    ),
    Mutant("construct/plan_cache.py", 'overwrite=True, what="plan"', 'overwrite=False, what="plan"', "stale kept"),
    Mutant(
        "construct/plan_cache.py",
        "if versions is None or not defined_by_library(spec.model):",
        "if versions is None:",
        "models registered by user code cached",
    ),
    Mutant("cache_folder.py", "if not folder.is_absolute():", "if False:", "a relative FEATX_CACHE_DIR used"),
    Mutant(
        "cache_folder.py",
        "except RuntimeError:  # no HOME and no passwd entry",
        "except ValueError:  # no HOME and no passwd entry",
        "no home folder: a raw RuntimeError",
    ),
    Mutant(
        "construct/plan_cache.py",
        '        "featx planner": planner.hexdigest()[:16],\n',
        "",
        "the planning code not in the key",
    ),
    # stage resolution and planning
    Mutant(
        "construct/members.py",
        'if path == owned or path.startswith(owned + ".") or owned.startswith(path + "."):',
        "if path == owned:",
        "a module inside another stage's module",
    ),
    Mutant(
        "construct/execution_order.py",
        "        if found == path:\n            continue\n",
        "        if found == path or found is None:\n            continue\n",
        "a member the forward never reaches passes",
    ),
    Mutant(
        "construct/execution_order.py",
        "if path in containers or inside_member or (parent and parent not in containers):",
        "if path in containers or inside_member or parent:",
        "modules below the root never checked",
    ),
    Mutant(
        "construct/probe.py",
        "return int(2 ** max(0, round(math.log2(size[0] / height))))",
        "return int(2 ** max(0, math.floor(math.log2(size[0] / height))))",
        "stride rounded down",
    ),
    Mutant(
        "nn/neck_levels.py",
        "    if any(later != 2 * earlier for earlier, later in itertools.pairwise(strides)):",
        "    if any(later <= earlier for earlier, later in itertools.pairwise(strides)):",
        "RoIs pooled from levels that skip a stride",
    ),
    Mutant(
        "nn/neck_levels.py",
        '    if any(stride & (stride - 1) for stride in strides):\n        return "for a token model',
        '    if False:\n        return "for a token model',
        "RoIs pooled from a stride-14 map at scale 1/16",
    ),
    Mutant(
        "tasks/detection.py",
        "if size <= 0 or min(min(level) for level in sizes) < 1:",
        "if size <= 0:",
        "anchors of size 0",
    ),
    Mutant(
        "construct/plan.py",
        "for size in PROBE_SIZES]",
        "for size in ((declared,) if declared else PROBE_SIZES)]",
        "an any-size model measured at its input_size alone",
    ),
    Mutant(
        "construct/probe.py",
        "return int(shape[spatial_dims(layout)[0]])",
        "return int(shape[1])",
        "channels read from dim 1 whatever the layout",
    ),
    Mutant(
        "construct/execution_order.py",
        "        if own is not None and ours is not None and own != ours:",
        "        if False:",
        "members fed other shapes than the forward gives them",
    ),
    # token models
    Mutant(
        "nn/tokens.py",
        "patches = tokens[:, tokens.shape[1] - grid[0] * grid[1] :]",
        "patches = tokens[:, : grid[0] * grid[1]]",
        "the map keeps the prefix tokens and drops the last patches",
    ),
    Mutant(
        "nn/tokens.py",
        "torch.cat([*(token.expand(batch, -1, -1) for token in self.prefix), tokens], dim=1)",
        "torch.cat([tokens, *(token.expand(batch, -1, -1) for token in self.prefix)], dim=1)",
        "prefix tokens put after the patches",
    ),
    Mutant(
        "nn/tokens.py",
        'mode="bicubic", align_corners=True)',
        'mode="bicubic", align_corners=False)',
        "position embedding resampled without aligned corners",
    ),
    Mutant(
        "nn/tokens.py",
        "    channels = position.shape[-1]\n",
        "    if tuple(new_grid) == tuple(grid):\n        return position\n    channels = position.shape[-1]\n",
        "a shortcut at the embedding's own grid (exports specialise to one size)",
    ),
    Mutant(
        "nn/simple_pyramid.py",
        "layers += [_channel_norm(narrower), nn.GELU()]",
        "layers += [_channel_norm(narrower)]",
        "no GELU between the transposed convolutions",
    ),
    Mutant(
        "construct/token_layout.py",
        "layout = TokenLayout(tokens, tokens.stride or patch, patch, grid, prefix_count, measured.returns_tokens)",
        "layout = TokenLayout(tokens, patch, patch, grid, prefix_count, measured.returns_tokens)",
        "tokens.stride ignored",
    ),
    Mutant(
        "construct/token_layout.py",
        "        if length <= covered:",
        "        if False:",
        "a position embedding shorter than the prefix passes",
    ),
    Mutant(
        "construct/propose_tokens.py",
        "position, _ = max(found, key=lambda item: item[1])",
        "position, _ = min(found, key=lambda item: item[1])",
        "the shortest token parameter taken for the position embedding",
    ),
    # weights
    Mutant(
        "construct/weights.py",
        "return tensor.detach().to(dtype=dtype, copy=True, memory_format=torch.contiguous_format)",
        "return tensor.to(dtype, memory_format=torch.contiguous_format)",
        "kept tensors left as the file's memory-mapped pages",
    ),
    Mutant(
        "construct/checkpoint.py",
        "    if any(getattr(saved, field) != getattr(spec, field) for field in MEANING_KEYS):\n",
        "    if False:\n",
        "a featx checkpoint loaded into another model with the same tensors",
    ),
    Mutant("construct/checkpoint.py", "    if tied:\n", "    if False:\n", "tied tensors saved (a raw error)"),
    Mutant(
        "construct/builder.py",
        "        raise attributed(error, origin, overrides) from None",
        "        raise",
        "the model's checks name no spec file",
    ),
    Mutant(
        "tasks/export.py",
        "            module.training = training",
        "            pass",
        "an export leaves a training backbone in eval mode",
    ),
    Mutant(
        "construct/weights.py",
        "_kind(state[key]) != _dtype_kind(expected[key].dtype)]",
        "False]",
        "integer weights loaded into float layers",
    ),
    Mutant(
        "construct/weights.py",
        "mismatched = [key for key in expected if key in state and state[key].shape != expected[key].shape]",
        "mismatched: List[str] = []",
        "shape mismatches unreported",
    ),
    Mutant(
        "construct/builder.py",
        "            torch.default_generator.manual_seed(spec.seed)\n",
        "",
        "random init unseeded",
    ),
    # norm policies and freezing
    Mutant(
        "nn/freezing.py",
        "FrozenBatchNorm2d(norm.num_features, eps=norm.eps)",
        "FrozenBatchNorm2d(norm.num_features)",
        "FrozenBatchNorm2d without the layer's eps",
    ),
    Mutant(
        "nn/freezing.py",
        "        frozen.running_mean.copy_(norm.running_mean)\n",
        "",
        "running_mean not carried into FrozenBatchNorm2d",
    ),
    Mutant(
        "nn/freezing.py", "    stage.requires_grad_(not frozen)", "    stage.requires_grad_(True)", "freeze keeps grads"
    ),
    Mutant(
        "nn/freezing.py",
        "            kept = name in frozen or (kept_norm and isinstance(layer, _BatchNorm))",
        "            kept = kept_norm and isinstance(layer, _BatchNorm)",
        "train() un-freezes frozen stages' BatchNorm",
    ),
    Mutant(
        "nn/freezing.py",
        '    kept_norm = norm in ("eval", "frozen")',
        '    kept_norm = norm == "frozen"',
        "norm: eval layers follow train()",
    ),
    Mutant(
        "nn/freezing.py",
        "                    layer.train = _EvalOnly(layer)  # type: ignore[method-assign]",
        "                    pass",
        "train() keeps nothing in eval",
    ),
    # neck
    Mutant(
        "nn/fpn.py",
        "block, extra_levels = extra_block(spec, inputs[-1], inputs[-1].channels, torchvision_names)",
        "block, extra_levels = extra_block(spec, inputs[-1], spec.out_channels, torchvision_names)",
        "P6 from P5 when C5's width differs",
    ),
    Mutant("nn/fpn.py", 'return f"p{stride.bit_length() - 1}"', 'return f"p{stride.bit_length()}"', "levels misnamed"),
    # feature store
    Mutant(
        "tasks/extract/store.py",
        "or current[stored.path] != stored.identity:",
        ":",
        "stale features of a changed image listed",
    ),
    Mutant(
        "tasks/extract/store.py",
        'rf"^{SHARD_DIR}/shard-r\\d{{3,9}}-\\d{{5,9}}\\.safetensors$"',
        'r".*"',
        "manifest shard paths unchecked",
    ),
    Mutant(
        "tasks/extract/store.py",
        "            lambda partial: save_file(contiguous, str(partial), metadata=metadata),",
        "            lambda partial: save_file(contiguous, str(path), metadata=metadata),",
        "shards written straight to their final name",
    ),
    # transforms, listing, decoding
    Mutant(
        "tasks/extract/transforms.py",
        "IMAGENET_STD = (0.229, 0.224, 0.225)",
        "IMAGENET_STD = (0.5, 0.5, 0.5)",
        "normalised with std 0.5",
    ),
    Mutant(
        "tasks/extract/transforms.py",
        "shorter = int(max(height, width) / CROP_FRACTION)",
        "shorter = int(max(height, width))",
        "crop without the /0.875 resize",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "        if _left_out(file, folder):\n            continue\n",
        "",
        "output folder listed",
    ),
    Mutant(
        "tasks/extract/decode.py",
        "np.asarray(image, dtype=np.float32) / 65535.0",
        "np.clip(np.asarray(image, dtype=np.float32), 0, 255) / 255.0",
        "16-bit images clipped to 8 bits",
    ),
    # extract.decode=gpu
    Mutant(
        "tasks/extract/device_decode.py",
        "        return image.rot90(-1, dims=(-2, -1))",
        "        return image.rot90(1, dims=(-2, -1))",
        "EXIF orientation 6 turned the wrong way on the device",
    ),
    Mutant(
        "tasks/extract/device_decode.py",
        "        except Exception:  # noqa: BLE001 - one bad file fails the whole call; find it below\n",
        "        except Exception as error:  # noqa: BLE001\n            return [error] * len(data)\n",
        "one bad JPEG sends its whole batch to Pillow",
    ),
    Mutant(
        "tasks/extract/transforms.py",
        "transforms.Compose([transforms.ConvertImageDtype(torch.float32), transforms.Normalize(mean, std)])",
        "transforms.Compose([transforms.Lambda(lambda image: image.float()), transforms.Normalize(mean, std)])",
        "device-decoded pixels not scaled to [0, 1]",
    ),
    Mutant(
        "tasks/extract/transforms.py",
        "preset.resize_size, interpolation=preset.interpolation, antialias=preset.antialias",
        "preset.resize_size, antialias=preset.antialias",
        "a bicubic weights preset resizes tensors bilinearly",
    ),
    Mutant(
        "tasks/extract/device_decode.py",
        "            for row, (index, (_, identity)) in enumerate(shaped.items()):",
        "            for row, (index, (_, identity)) in enumerate(reversed(shaped.items())):",
        "a batch's normalised rows handed to the wrong images",
    ),
    Mutant(
        "tasks/extract/device_decode.py",
        '    return _colour_reason(image) if image.mode == "RGB" else ""',
        '    return ""',
        "an RGB JPEG (no YCbCr transform) goes to nvJPEG",
    ),
    Mutant(
        "tasks/extract/device_decode.py",
        'marker == "APP0" and len(data) >= _JFIF_LENGTH and data.startswith(b"JFIF\\0")',
        'marker == "APP0" and data.startswith(b"JFIF")',
        "a JFIF segment libjpeg ignores (too short, no NUL) sends an RGB JPEG to nvJPEG",
    ),
    Mutant(
        "tasks/extract/device_decode.py",
        "    if not data.rstrip(_PADDING).endswith(END_OF_IMAGE):",
        "    if False:",
        "a truncated JPEG goes to the device decoder",
    ),
    Mutant(
        "tasks/extract/decode.py",
        "ORIENTATIONS.get(image.getexif().get(ORIENTATION_TAG, 1), 1)",
        "int(image.getexif().get(ORIENTATION_TAG, 1))",
        "an orientation Pillow ignores (the text '6') turns the image on the device",
    ),
    Mutant(
        "tasks/extract/device_decode.py",
        'problem = "" if _is_on(decoded, device) else f"it decodes onto {decoded.device}"',
        'problem = ""',
        "a device torchvision does not decode onto passes the check",
    ),
    Mutant(
        "tasks/extract/device_decode.py",
        "    if close < _MOST or float(levels.max()) > _FAR:",
        "    if False:",
        "a transform that treats tensors otherwise than Pillow images is accepted",
    ),
    Mutant(
        "tasks/extract/store.py",
        '        if fallbacks:\n            record["fallbacks"] = dict(fallbacks)\n',
        "",
        "files decoded on the CPU in a decode=gpu run are not listed",
    ),
    Mutant(
        "tasks/extract/run.py",
        '    if options.decode != "cpu":  # recorded only when not the default, so folders made before the key resume\n'
        '        settings["decode"] = options.decode\n',
        "",
        "decode=gpu features added to a decode=cpu folder",
    ),
    # timm models
    Mutant(
        "nn/freezing.py",
        "    return type(norm).forward is not _BatchNorm.forward",
        "    return False",
        "norm: frozen turns timm's BatchNormAct2d into FrozenBatchNorm2d (its activation dropped)",
    ),
    Mutant(
        "nn/freezing.py",
        '    kept_norm = norm in ("eval", "frozen")',
        '    kept_norm = norm == "eval"',
        "train() lets the BatchNorm layers norm: frozen keeps in place update their statistics",
    ),
    Mutant(
        "nn/freezing.py",
        "        _freeze_affine(stage)",
        "        pass",
        "unfreeze() makes the affine terms of frozen-in-place BatchNorm layers trainable",
    ),
    Mutant(
        "construct/propose.py",
        "        if growth is not None:\n            queue.insert(0, (path, module))",
        "        if False:\n            queue.insert(0, (path, module))",
        "propose ends timm VGG with its unpadded 7x7 head, a stage build refuses",
    ),
    Mutant(
        "construct/probe.py",
        "if abs(grown - more / stride) >= 1:",
        "if abs(grown - more / stride) >= 4:",
        "a stride-7 stage read as stride 8",
    ),
    Mutant(
        "construct/propose.py",
        "outputs = _feature_maps(module, xs) if called and given == tuple(xs[0].shape) else None",
        "outputs = _feature_maps(module, xs)",
        "propose puts modules the forward feeds other shapes (a dropout after the pool) into the last stage",
    ),
    Mutant(
        "models/timm_weights.py",
        '_HUB_FILES = ("model.safetensors", "pytorch_model.bin")',
        '_HUB_FILES = ("model.safetensors",)',
        "a hub cache holding pytorch_model.bin only is not found",
    ),
    Mutant(
        "models/timm_models.py",
        "        if tag in tags:",
        "        if False:",
        "model: timm:NAME.TAG is called an unknown model instead of pointing to weights: TAG",
    ),
    # writing files
    Mutant("files.py", "        os.link(partial, path)\n", "        os.replace(partial, path)\n", "save overwrites"),
    Mutant(
        "files.py",
        "        partial.unlink(missing_ok=True)\n",
        "        pass\n",
        "temporary files left behind",
    ),
    Mutant(
        "files.py",
        "            partial.chmod(stat.S_IMODE(created.st_mode))\n",
        "            pass\n",
        "a writer's 0600 file kept whatever the umask",
    ),
    # the hostile reviews of 2026-12-04
    Mutant(
        "tasks/extract/store.py",
        "            _check_row(entry, images, where, who)\n",
        "",
        "manifest rows not checked against their shard's record",
    ),
    Mutant(
        "tasks/extract/store.py",
        "        if manifest.is_file() and not manifest.is_symlink():\n            manifest.unlink()\n",
        "",
        "a resumed run keeps the old manifest until its end",
    ),
    Mutant(
        "tasks/extract/decode.py",
        "        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):\n"
        "            raise SkippedImage(NOT_REGULAR, before)\n",
        "",
        "a pipe in place of a listed file is read",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "    return None if stat.S_ISREG(mode) else NOT_REGULAR",
        "    return None",
        "pipes and devices listed as images",
    ),
    Mutant(
        "tasks/extract/decode.py",
        "    check_proportions(image.size, shorter_side)\n",
        "",
        "a thread-thin image resized to gigabytes",
    ),
    Mutant(
        "tasks/extract/run.py",
        "            check_input_size(spec, transform, transform_name, options.batch_size, options.size)\n",
        "",
        "a size too small for the backbone found after the settings are recorded",
    ),
    Mutant(
        "models/published_weights.py",
        "    if not (trained_half_normalised(model) and isinstance(preset, ImageClassification)):\n",
        "    if True:\n",
        "GoogLeNet's and Inception-v3's weights fed ImageNet-normalised images",
    ),
    Mutant(
        "nn/reinit.py",
        "            elif isinstance(layer, nn.MultiheadAttention):",
        "            elif False:",
        "attention projections left out of reinit",
    ),
    Mutant(
        "spec/validate.py",
        "        if name == RESERVED_STAGE_NAME:",
        "        if False:",
        "a stage called neck",
    ),
    Mutant(
        "cli/app.py",
        "            _refuse_shadowed_backbone()\n",
        "",
        "featx-export and featx-extract use the packaged file a user's file shadows",
    ),
    Mutant(
        "construct/checkpoint.py",
        '    unbuilt = tuple(f"stages.{name}." for name in saved.stages if name not in built)\n',
        "    unbuilt = ()\n",
        "a saved file refused for returning fewer stages",
    ),
    Mutant(
        "cli/command_line.py",
        "    check_plain_keys(app, overrides, schema)\n",
        "",
        "a mistyped key gets Hydra's multi-line answer",
    ),
    Mutant(
        "construct/builder.py",
        "    _check_rebuilds_as_saved(backbone)\n",
        "    pass\n",
        "a backbone its spec does not build saved",
    ),
    Mutant(
        "construct/builder.py",
        '    backbone = backbone_of(backbone, "save")',
        "    pass",
        "a model holding a backbone saved (featx.load then refuses the file); a compiled one with _orig_mod. keys",
    ),
    Mutant(
        "construct/model_structure.py",
        '"BatchNorm2d" if isinstance(module, nn.SyncBatchNorm) else ',
        "",
        "SyncBatchNorm layers refused by save",
    ),
    Mutant(
        "construct/model_structure.py",
        '" with its forward replaced" if "forward" in vars(module) else ""',
        '""',
        "a forward replaced on an instance saved",
    ),
    Mutant(
        "construct/weights.py",
        ", memory_format=torch.contiguous_format)",
        ")",
        "a channels_last file's kernel strides kept on load",
    ),
    Mutant(
        "nn/backbone.py",
        "        if torch.compiler.is_exporting() or torch.jit.is_tracing()",
        "        if torch.compiler.is_compiling() or torch.jit.is_tracing()",
        "input checks skipped under torch.compile",
    ),
    Mutant(
        "nn/backbone.py",
        "isinstance(error, ValueError) and _ONE_VALUE_PER_CHANNEL in str(error)",
        "False",
        "one value per channel in training: raw ValueError",
    ),
    Mutant(
        "construct/plan.py",
        "    if patch is None and len(sizes) > 1:\n",
        "    if False:\n",
        "a stride that is no power of two read as the nearest one",
    ),
    Mutant(
        "nn/neck_levels.py",
        '    if style == "simple" and len(levels) > 1:',
        "    if False:",
        "a simple pyramid over several returned stages (all but the last computed and dropped)",
    ),
    Mutant(
        "nn/backbone.py",
        '        if name == "neck" and "stage_info" in self.__dict__:',
        '        if name == "neck" and "stage_info" in self.__dict__ and "neck" not in self._modules:',
        "assigning a neck leaves feature_info describing the old one",
    ),
    Mutant(
        "cli/report.py",
        "                _token_parameters_held(backbone, info.paths),",
        '                "",',
        "a token model's embed row omits the token parameters it counts",
    ),
    # in-place changes of returned maps
    Mutant(
        "construct/plan.py",
        "    return _StageRun(shapes, tuple(name for name, output, version in outputs if output._version != version))",
        "    return _StageRun(shapes, ())",
        "a stage's output a later stage changes in place is returned changed",
    ),
    Mutant(
        "construct/probe.py",
        "        torch.autograd.graph.increment_version(x)",
        "        pass",
        "the probe's in-place layers hide the change from the planner",
    ),
    Mutant(
        "nn/backbone.py",
        "self._as_map(x.clone() if name in self._copied else x, grid)",
        "self._as_map(x, grid)",
        "the backbone returns the map a later stage changes in place",
    ),
    Mutant(
        "construct/plan_data.py",
        "        tuple(changed),\n",
        "        (),\n",
        "a cached plan forgets the stages changed in place",
    ),
    # inputs
    Mutant(
        "nn/backbone.py",
        "        if isinstance(x, torch.fx.Proxy):\n            return checked\n",
        "        if isinstance(x, torch.fx.Proxy):\n            return x\n",
        "a torch.fx trace records no input check (a ViT crops what it cannot take)",
    ),
    Mutant(
        "nn/backbone.py",
        "cast = autocast and x.dtype in _AUTOCAST_CASTS and reference",
        "cast = autocast and reference",
        "float64 under autocast reaches torch's convolution",
    ),
    Mutant(
        "nn/backbone.py",
        "    if x.is_nested or x.layout != torch.strided:",
        "    if False:",
        "sparse, MKL-DNN and nested inputs reach torch",
    ),
    Mutant(
        "nn/backbone.py",
        '            if where == "the neck" or not _is_about_sizes(error) or not _raised_in_library_code(error):',
        "            if True:",
        "a stage's failure on an input is torch's raw error",
    ),
    Mutant(
        "nn/backbone.py",
        "isinstance(error, ValueError) and _SYNC_NEEDS_GPU in str(error)",
        "False",
        "norm: sync off the GPU in a process group: raw ValueError",
    ),
    Mutant(
        "nn/backbone.py",
        "        if takes is not None and [(i.channels, i.stride) for i in takes]",
        "        if False and [(i.channels, i.stride) for i in takes]",
        "a neck built for other widths accepted on assignment",
    ),
    Mutant(
        "nn/backbone.py",
        "        return groups if names is None else _picked(groups, names)",
        "        return groups",
        "param_groups ignores names: a resumed optimizer's groups in stage order",
    ),
    Mutant(
        "tasks/export.py",
        "torch.randn(*shape, generator=generator)",
        "torch.randn(*shape)",
        "export draws from the user's global random stream",
    ),
    # extraction bounds
    Mutant(
        "tasks/extract/run.py",
        "            self.shard_size = min(self.shard_size, max(1, MAX_SHARD_BYTES // max(per_image, 1)))\n",
        "            pass\n",
        "a shard holds shard_size full maps whatever their bytes",
    ),
    Mutant(
        "tasks/extract/decode.py",
        "handle.read(before[0] + 1)",
        "handle.read(MAX_IMAGE_BYTES + 1)",
        "every image read reserves 1 GiB",
    ),
    Mutant(
        "tasks/extract/decode.py",
        "        except MemoryError:\n            raise  # not the file's fault",
        "        except MemoryError as error:\n            return index, None, *failure(error, identity)  #",
        "a MemoryError while decoding recorded as an unreadable image for good",
    ),
    Mutant(
        "spec/references.py",
        "return f\"{marker}{'.'.join(map(str, path))}{marker}\" if calls_resolver(data) else data",
        "return data",
        "a resolver a composed spec's references reach is run",
    ),
    Mutant(
        "spec/references.py",
        'return any(_has_resolver(child) for child in getattr(tree, "children", None) or ())',
        "return False",
        "a resolver whose name an interpolation builds runs",
    ),
    Mutant(
        "tasks/extract/store.py",
        "list(outputs) if isinstance(outputs, (list, tuple)) else None if outputs is not None else list(stored)",
        "list(outputs) if outputs is not None else list(stored)",
        "read_features takes outputs in no order (a set)",
    ),
    Mutant(
        "nn/backbone.py",
        "isinstance(names, (str, bytes, Mapping, AbstractSet))",
        "isinstance(names, (str, bytes, Mapping))",
        "param_groups takes a set of names, whose order changes between processes",
    ),
    Mutant(
        "nn/backbone.py",
        "        _check_arguments(stages, stage_info, spec, in_channels, copied)\n",
        "",
        "a hand-made Backbone's arguments unchecked",
    ),
    Mutant(
        "files.py",
        "if match and entry.is_file(follow_symlinks=False) and _process_is_gone(int(match.group(1))):",
        "if match and entry.is_file(follow_symlinks=False):",
        "a running writer's temporary file is removed by another write",
    ),
    Mutant(
        "files.py",
        "        if clean_left:\n            _remove_left_partials(path)\n",
        "",
        "a killed writer's temporary file stays for good",
    ),
    Mutant(
        "tasks/extract/names.py",
        "return _OWN_NAME.fullmatch(name) is not None",
        'return name.lstrip(".").startswith("featx-")',
        "a user's featx-named image is left out of the input",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "return stat.st_size, stat.st_mtime_ns, stat.st_ino",
        "return stat.st_size, stat.st_mtime_ns, 0",
        "files of one size and time whose names were swapped keep each other's features",
    ),
    Mutant(
        "tasks/extract/store.py",
        "                    _check_collection(record, collection, shard, OUTPUT_KEY)\n",
        "",
        "a resume adopts a shard copied in from another extraction",
    ),
    Mutant(
        "tasks/extract/store.py",
        "        _check_collection(record, collection, shard, who)\n",
        "",
        "read_features mixes in a shard of another extraction",
    ),
    Mutant(
        "tasks/extract/store.py",
        "    if not stat.S_ISREG(mode):",
        "    if False:",
        "links and FIFOs at shard names read",
    ),
    Mutant(
        "tasks/extract/store.py",
        'if previous is not None and entry["path"] <= previous:',
        "if False:",
        "a manifest listing a file twice is read twice",
    ),
    Mutant(
        "tasks/extract/store.py",
        "if tensor.dtype != dtype or list(tensor.shape) != shape:",
        "if False:",
        "a shard's dtype and shapes not checked against the settings and manifest",
    ),
    Mutant(
        "tasks/extract/store.py",
        "                    opened.popitem(last=False)[1][0].close()\n",
        "                    pass\n",
        "read_features keeps every shard it read open",
    ),
    Mutant(
        "construct/checkpoint.py",
        "    except (ValueError, RecursionError) as error:",
        "    except ValueError as error:",
        "deeply nested featx metadata: raw RecursionError",
    ),
    Mutant(
        "models/legacy_keys.py",
        "    if is_timm_model(model) or not renames:",
        "    if True:",
        "torchvision's published DenseNet files refused as foreign",
    ),
    # weights files, seeds
    Mutant(
        "construct/builder.py",
        "        checkpoint.check_unchanged()  # every tensor the backbone keeps is copied by now",
        "        pass",
        "a weights file rewritten while its tensors are copied mixes two versions",
    ),
    Mutant(
        "construct/builder.py",
        '            with torch.device("cpu"):',
        "            with torch.device(torch.get_default_device()):",
        "the caller's default device leaks into the build (the neck, the frozen norm layers)",
    ),
    Mutant(
        "construct/builder.py",
        "        torch.default_generator.manual_seed(spec.seed)",
        "        torch.manual_seed(spec.seed)",
        "a build reseeds the user's CUDA generators",
    ),
    Mutant(
        "construct/checkpoint.py",
        "    if count > 1:",
        "    if False:",
        "a file holding state_dict and state_dict_ema loads one of them silently",
    ),
    Mutant(
        "models/weights_enums.py",
        "hash_prefix=hash_prefix, progress=True",
        "hash_prefix=None, progress=True",
        "a download is cached whatever its hash",
    ),
    Mutant(
        "models/weights_enums.py",
        "([A-Z][A-Z0-9_]*)$",
        "(\\w+)$",
        "a file named ResNet18_Weights.pth taken for an enum member",
    ),
    Mutant(
        "tasks/extract/run.py",
        "        if _weights_identity(weights_file) != before:",
        "        if False:",
        "features recorded against a weights file rewritten after the build",
    ),
    # apps
    Mutant(
        "cli/sweeps.py",
        "        if jobs > MAX_SWEEP_JOBS:",
        "        if False:",
        "a sweep of 10^8 jobs is listed in full",
    ),
    Mutant(
        "cli/override_checks.py",
        'if "${" in choice and (group == "backbone" or "/" in group):',
        "if False:",
        "an interpolated group choice escapes the config roots",
    ),
    Mutant(
        "cli/output_folders.py",
        "        problem = (_problem(root) or _secure(root)) if root is not None else None\n",
        "        problem = None\n",
        "the default log root may be a link or another user's folder",
    ),
    Mutant(
        "nn/backbone.py",
        "            module = wrapped\n",
        "            break\n",
        "a compiled backbone refused by the detection helpers",
    ),
    Mutant(
        "tasks/export.py",
        "        with torch.no_grad(), _float32_without_tf32(x.device):\n",
        "        with torch.no_grad():\n",
        "the export check compares under the user's TF32 settings",
    ),
    # 2026-12-05 (fifth): threads, nested builds, apps, extraction inputs, timm proposals
    Mutant(
        "cli/export.py",
        "    if fixed is not None and (height, width) != (fixed[0], fixed[1]):",
        "    if fixed is not None and (height, width) not in ((fixed[0], fixed[1]), (224, 224)):",
        "an explicit 224x224 on a fixed-size model silently replaced",
    ),
    Mutant(
        "construct/builder.py",
        "registrations_untouched(), _seeded_construction(), _default_dtype(",
        "registrations_untouched(), _default_dtype(",
        "two threads draw from one seeded generator at once (and set the default dtype)",
    ),
    Mutant(
        "construct/builder.py",
        "    with registrations_untouched(), _seeded",
        "    with contextlib.nullcontext(), _seeded",
        "a build inside a model constructor gets meta tensors",
    ),
    Mutant(
        "models/meta_construction.py",
        "        if tensor is None or not innermost or innermost[-1] is not token:",
        "        if tensor is None:",
        "other threads' and nested builds' modules moved to meta",
    ),
    Mutant(
        "models/meta_construction.py",
        'with torch.device("cpu"), SkipValueWritesOnMeta(), _on_registration(lambda index, tensor: True',
        "with SkipValueWritesOnMeta(), _on_registration(lambda index, tensor: True",
        "RegNet under a meta default device: raw NotImplementedError",
    ),
    Mutant(
        "models/weights_enums.py",
        "    except OSError as error:  # e.g. a TORCH_HOME longer than the file system takes",
        "    except ValueError as error:  # e.g. a TORCH_HOME longer than the file system takes",
        "a too-long TORCH_HOME: raw OSError",
    ),
    Mutant(
        "construct/plan_cache.py",
        "    folder = user_plans_dir()  # FEATX_CACHE_DIR checked for every spec, a packaged plan's too\n",
        "",
        "a relative FEATX_CACHE_DIR passes for packaged plans",
    ),
    Mutant(
        "cli/output_folders.py",
        "        if not str(folder).strip():",
        "        if False:",
        "an empty hydra.run.dir writes into the working directory",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "    return below is not None and (not below.parts or is_own_name(below.parts[0]))",
        "    return below is not None",
        "the user's images in an output folder inside the input dropped",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "    except (RuntimeError, OSError):  # a symbolic link loop",
        "    except OSError:  # a symbolic link loop",
        "a link loop in the input: raw RuntimeError",
    ),
    Mutant(
        "tasks/extract/decode.py",
        ' or (image.mode == "I" and image.format == "PPM")',
        "",
        "a 16-bit PGM skipped as 32-bit integer pixels",
    ),
    Mutant(
        "tasks/extract/run.py",
        '        backbone["weights"] = "local file"  # file rewritten under the same name is not\n',
        "",
        "the same weights at another path refused as other settings",
    ),
    Mutant(
        "cli/catalog.py",
        "        if not any(fnmatch.fnmatchcase(name, bare) for name in names):",
        "        if not names:",
        "featx-list drops a pattern that matches nothing",
    ),
    Mutant(
        "cli/catalog.py",
        "    if overrides:",
        "    if False:",
        "featx-list takes an override for a pattern",
    ),
    Mutant(
        "cli/command_line.py",
        "    if leaves_config_roots(name):",
        "    if False:",
        "--config-name reads any YAML file",
    ),
    Mutant(
        "cli/hydra_errors.py",
        "    if other_form is not None and missing == other_form.group(1):",
        "    if other_form is not None:",
        "a missing stage named like a form gets the other-form hint",
    ),
    Mutant(
        "files.py",
        '    if last in ("", ".", ".."):',
        '    if last == "":',
        "a path ending in /. writes a file of the folder's name",
    ),
    Mutant(
        "cli/logs.py",
        "    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:\n        quiet_other_loggers()",
        "    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:\n        pass",
        "a sweep prints Hydra's launcher messages",
    ),
    Mutant(
        "construct/propose.py",
        "if links and path in call_order and any(",
        "if False and any(",
        "a classifier-head layer proposed as part of the last stage",
    ),
    Mutant(
        "construct/propose.py",
        "        return self.model_features is not None and self.stages[-1].channels != self.model_features",
        "        return False",
        "a proposal ending before the model's last features says nothing",
    ),
    Mutant(
        "nn/tokens.py",
        '    if like == "timm":',
        "    if False:",
        "timm token models resampled as torchvision does",
    ),
    # ❖ this session's reviews: names in a stage, spec values, the shard record, skipped files, paths, the apps
    Mutant(
        "construct/members.py",
        "            if child in named:",
        "            if False:",
        "two member paths a stage names alike (a.b, a_b): one module dropped silently",
    ),
    Mutant(
        "construct/members.py",
        "            if hasattr(container, child):",
        "            if False:",
        "a member named like an nn.Sequential attribute is torch's raw KeyError",
    ),
    Mutant(
        "nn/backbone.py",
        "taken = next((name for name in stages if hasattr(container, name)), None)",
        "taken = None",
        "a stage named like an nn.ModuleDict attribute is torch's raw KeyError",
    ),
    Mutant(
        "spec/yaml_file.py",
        "for _tag in _REFUSED_TAGS:",
        "for _tag in ():",
        "a date or set in a spec file is OmegaConf's message, without the file",
    ),
    Mutant(
        "spec/yaml_file.py",
        "            if key is None or isinstance(key, (list, dict)):",
        "            if key is None:",
        "a list as a key in a spec file is a raw TypeError",
    ),
    Mutant(
        "tasks/extract/run.py",
        " or self.skipped_bytes + sum(self.image_bytes) > SHARD_RECORD_BUDGET:",
        ":",
        "long paths make a shard record the reader refuses",
    ),
    Mutant(
        "tasks/extract/run.py",
        "            if self.skipped and self.skipped_bytes + size > SHARD_RECORD_BUDGET:\n"
        "                self.flush(0)\n",
        "",
        "skipped files pile into one shard record past the reader's bound",
    ),
    Mutant(
        "tasks/extract/decode.py",
        'an image file may have", before)',
        'an image file may have")',
        "a file too large to read is read again by every rerun",
    ),
    Mutant(
        "tasks/extract/store.py",
        "        entries = {**unread, **entries}\n",
        "",
        "a file that could not be read vanishes from the manifest",
    ),
    Mutant(
        "tasks/extract/store.py",
        "        if len(set(outputs)) < len(outputs):",
        "        if False:",
        "settings naming an output twice blame the caller's outputs",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "os.walk(folder, onerror=note, followlinks=False)",
        "os.walk(folder, followlinks=False)",
        "a folder that cannot be listed leaves its images out silently",
    ),
    Mutant(
        "files.py",
        "    return expand_home(text)\n",
        "    return Path(text)\n",
        "a path starting with ~ is taken literally (a folder named ~)",
    ),
    Mutant(
        "files.py",
        '        os.fsencode(path).decode("utf-8")\n    except',
        "        os.fsencode(path)\n    except",
        "a non-UTF-8 .safetensors path is written and never read back",
    ),
    Mutant(
        "spec/limits.py",
        '    except RuntimeError:\n        return (\n            f"{quoted(path)} starts with',
        '    except ValueError:\n        return (\n            f"{quoted(path)} starts with',
        "~user of no user is a raw RuntimeError",
    ),
    Mutant(
        "cli/output.py",
        "            return self._stream.write(text)\n        except OSError as error:",
        "            return self._stream.write(text)\n        except BrokenPipeError as error:",
        "standard output on a full disk is a traceback",
    ),
    Mutant(
        "cli/app.py",
        "            given = [*given, *check_completed_line(app, flags, schema)]\n",
        "            pass\n",
        "tab completion composes a line featx would refuse (files outside the roots, alias bombs)",
    ),
    Mutant(
        "cli/user_configs.py",
        "                    refuse_resolvers(content)\n",
        "                    pass\n",
        "a resolver in a user's backbone file is composed (and printed by tab completion) before it is refused",
    ),
    Mutant(
        "construct/builder.py",
        "    draw_dtype = torch.float32 if checkpoint is None else dtype",
        "    draw_dtype = dtype",
        "the seeded init draws in the caller's default dtype (another network under float64)",
    ),
    Mutant(
        "cli/app.py",
        "            if reader_went_away():  # quietly, as a single run ends: the reader asked for no more\n",
        "            if False:\n",
        "a sweep runs (and writes the files of) its jobs after the reader of stdout went away",
    ),
    Mutant(
        "construct/plan.py",
        "        _check_patch_multiple(spec, tokens.patch)\n",
        "",
        "a token model's input_size that is no multiple of its patch builds, then refuses every input",
    ),
    Mutant(
        "cli/app.py",
        "check_batch_shape(where, batch_size, *size, names=",
        "check_batch_shape(where, batch_size, *input_size(height, width, None), names=",
        "the featx app's batch limit checked at 224, not at the backbone's own input_size",
    ),
    Mutant(
        "cli/main.py",
        "cfg.input.height, cfg.input.width, spec.input_size)",
        "cfg.input.height, cfg.input.width, None)",
        "the featx app runs a fixed-size backbone at 224, where it fails",
    ),
    Mutant(
        "spec/limits.py",
        '    if not path.startswith("~") or os.path.lexists(path.split(os.sep)[0]):',
        '    if not path.startswith("~"):',
        "a file named like a home folder of no user (~x.pt) is refused though it exists as written",
    ),
    Mutant(
        "construct/checkpoint.py",
        "        overridden = differing or keys",
        "        overridden = keys",
        "a saved backbone that does not fit advises against overriding keys that may change (norm, out_features)",
    ),
    Mutant(
        "spec/load.py",
        """return error.with_origin(f"{origin} with overrides {quoted(list(overrides))}" if overrides else origin)""",
        "return error.with_origin(origin)",
        "an error an override of another key caused is blamed on the spec file alone",
    ),
    Mutant(
        "cli/user_configs.py",
        "fail(app, str(error if error.origin is not None else error.with_origin(str(path))))",
        "fail(app, str(error))",
        "a resolver in a user's backbone file is refused without naming the file",
    ),
    Mutant(
        "cli/output.py",
        "            if not self.active:\n                raise\n"
        "            raise self._lost(error) from None\n\n    def flush",
        "            raise self._lost(error) from None\n\n    def flush",
        "a log handler holding the stdout guard after the app turns logging errors off for the process",
    ),
    Mutant(
        "cli/output.py",
        "    if earlier is not None:",
        "    if False:",
        "a second call on a stdout found lost writes to /dev/null and succeeds",
    ),
    Mutant(
        "cli/output.py",
        "        if guarded.failure is not None and not guarded.reported:",
        "        if False:",
        "a failure to write stdout that a logging handler swallowed ends with status 0",
    ),
    Mutant(
        "cli/command_line.py",
        "    check_unplaced(app, unplaced)\n",
        "",
        "overrides split around a Hydra option print argparse's usage block",
    ),
    Mutant(
        "cli/app.py",
        "    if flags.shell_completion:\n        check_completion_command(app, flags.overrides)\n",
        "    if False:\n        check_completion_command(app, flags.overrides)\n",
        "-sc install=bash refused as an unknown key",
    ),
    Mutant(
        "cli/command_line.py",
        "    check_package(app, flags, schema)\n",
        "",
        "a --cfg -p key the config lacks is Hydra's line without the app or the keys",
    ),
    Mutant(
        "cli/export.py",
        'if options.path == "-":',
        'if options.path == "--":',
        "export.path=- writes a model file named -",
    ),
    Mutant(
        "construct/builder.py",
        "else os.path.join(os.curdir, path)",
        "else str(path)",
        "load('DEFAULT') records ImageNet's weights as the spec's",
    ),
    Mutant(
        "construct/checkpoint.py",
        "saved.fpn is not None and spec.fpn is not None and saved.returned_stages != spec.returned_stages:",
        "False:",
        "a saved FPN level silently fed another stage's map of the same width",
    ),
    Mutant(
        "construct/builder.py",
        "    check_model_name(spec.model)\n",
        "",
        "an unknown model with weights: DEFAULT is a raw ValueError",
    ),
    Mutant(
        "models/weights_enums.py",
        "    except ValueError:  # a builder the user's code registered without a weights argument",
        "    except KeyError:  # a builder the user's code registered without a weights argument",
        "a weights name for a builder without a weights enum is torchvision's raw ValueError",
    ),
    Mutant(
        "cli/app.py",
        "            if lost is not None:  # an earlier job found stdout gone",
        "            if False:  # an earlier job found stdout gone",
        "once stdout failed, a sweep's later jobs do their work for nothing and count as done",
    ),
    Mutant(
        "cli/app.py",
        "    except OSError as error:  # Hydra's own file work",
        "    except KeyError as error:  # Hydra's own file work",
        "a run folder Hydra cannot make is a raw traceback",
    ),
    Mutant(
        "tasks/extract/run.py",
        "        or (os.path.isdir(options.output) and os.path.samefile(source, options.output))  # through a link",
        "        or False",
        "an output folder linked to the input takes featx's files into it",
    ),
    Mutant(
        "construct/propose_tokens.py",
        "    if extra is not None:",
        "    if False:",
        "a ViT whose blocks take a rope argument is proposed, and its spec refused by its own build",
    ),
    # necks assigned by hand, anchors' arguments, freezing's side effects (hostile review, 2026-12-06)
    Mutant(
        "nn/simple_pyramid.py",
        '        refuse_levels(inputs, "simple", "SimpleFeaturePyramid()")',
        "        pass",
        "a simple pyramid made by hand over a stride-14 map reports p2..p5 at strides 4..32 it does not have",
    ),
    Mutant(
        "nn/fpn.py",
        '        refuse_levels(inputs, "fpn", "FeaturePyramid()")',
        "        pass",
        "an FPN made by hand over two maps of one stride drops one (both named p4)",
    ),
    Mutant(
        "nn/neck_levels.py",
        "        if level.stride & (level.stride - 1):",
        "        if False:",
        "a neck over a stride that is no power of two names levels by strides the maps do not have",
    ),
    Mutant(
        "nn/neck_levels.py",
        "        if deeper.stride <= shallower.stride:",
        "        if False:",
        "an FPN over maps of equal or decreasing strides",
    ),
    Mutant(
        "nn/backbone.py",
        "            if twice is not None:  # one key in the maps' dict: a map would replace another",
        "            if False:",
        "a neck naming two maps alike: the first returned map silently replaced by the second",
    ),
    Mutant(
        "nn/backbone.py",
        "        self._check_neck_tensors(reference, autocast)",
        "        pass",
        "a meta neck on real maps returns uninitialised memory; a half neck a raw RuntimeError",
    ),
    Mutant(
        "nn/backbone.py",
        "if neck.device != reference.device or (neck.dtype != reference.dtype and not cast):",
        "if neck.device != reference.device:",
        "a neck in another dtype than the stages: torch's raw dtype RuntimeError",
    ),
    Mutant(
        "tasks/detection.py",
        'value.numel() == 1 and value.device.type != "meta":',
        "value.numel() == 1:",
        "a meta tensor as size_per_stride: torch's raw RuntimeError from .item()",
    ),
    Mutant(
        "tasks/detection.py",
        " and not one_number:",
        ":",
        "numpy's 0-d array as aspect_ratios: a raw TypeError when iterated",
    ),
    Mutant(
        "tasks/detection.py",
        'isinstance(value, torch.Tensor) and value.device.type != "meta" else value',
        "isinstance(value, torch.Tensor) else value",
        "a meta tensor as aspect_ratios: torch's raw NotImplementedError from .tolist()",
    ),
    Mutant(
        "nn/freezing.py",
        ".to(statistics.device, statistics.dtype)",
        ".to(statistics.device)",
        "norm: frozen rounds a float64 model's statistics to float32 (a half model: raw RuntimeError)",
    ),
    Mutant(
        "nn/freezing.py",
        "            parameter.grad = None",
        "            pass",
        "freeze() keeps zeroed grads: momentum and weight decay move the frozen stages",
    ),
    Mutant(
        "nn/freezing.py",
        "layer.reset_parameters = _FullReset(layer)",
        "pass",
        "reset_parameters() of a layer kept in eval resets its affine terms but keeps its statistics",
    ),
    Mutant(
        "nn/backbone.py",
        "            self._frozen.add(name)\n"
        "        pin_kept_layers(self.stages, self._frozen, self._spec.norm)\n        return self",
        "            self._frozen.add(name)\n        return self.train(self.training)",
        "freeze() puts every module the user put in eval back in training mode",
    ),
    Mutant(
        "nn/backbone.py",
        "        pin_kept_layers(self.stages, self._frozen, self._spec.norm)\n        for name in named:",
        "        for name in named:",
        "unfreeze() leaves the stage pinned in eval mode: it never trains again",
    ),
    Mutant(
        "nn/freezing.py",
        '                layer.__dict__.pop("train", None)',
        "                pass",
        "a stage unfrozen stays in eval mode through train()",
    ),
    Mutant(
        "nn/freezing.py",
        "        return type(layer).train(layer, False)",
        "        return type(layer).train(layer, mode)",
        "a layer kept in eval follows the train() of a module holding it (a graph, a detector)",
    ),
    Mutant(
        "nn/freezing.py",
        "        if not isinstance(mode, bool):  # torch's own refusal",
        "        if False:",
        "a kept layer's train('no') passes where torch's refuses it",
    ),
    Mutant(
        "construct/weights.py",
        "mapped = is_zip and is_utf8_path(path) and _records_checked(path)",
        "mapped = is_zip and _records_checked(path)",
        "a checkpoint whose name is not UTF-8: a raw AttributeError from torch's reader",
    ),
    Mutant(
        "construct/checkpoint.py",
        '    refuse_interpolation_in_path(path, "save(): path")',
        "    pass",
        "featx.save writes run_${seed}.pt, which featx.load cannot take back",
    ),
    Mutant(
        "construct/builder.py",
        '    refuse_interpolation_in_path(path, "load(): path")',
        "    pass",
        "featx.load of run_${seed}.pt blames the file's spec for the path's ${",
    ),
    Mutant(
        "construct/builder.py",
        "        if spec.device != saved.device:",
        "        if True:",
        "a file saved on a GPU refused on a CPU machine without naming the file or the device=cpu override",
    ),
    Mutant(
        "cli/app.py",
        "        indexed = null_list_indexed(flags.overrides, schema) if hydras else []",
        "        indexed = []",
        "backbone.out_features.0=c5 on a null list: Hydra's bare AssertionError, no key named",
    ),
    Mutant(
        "cli/app.py",
        "            files.setdefault(path.resolve(), path)",
        "            files[Path(str(len(files)))] = path",
        "a config root on the search path twice: one file refused as two",
    ),
    Mutant(
        "spec/config_files.py",
        "            if path.resolve() not in seen:",
        "            if path not in seen:",
        "featx-list --config-dir given twice (or a file linked from another root): a file listed as an ignored "
        "duplicate of itself",
    ),
    Mutant(
        "cli/catalog.py",
        "    cells = (printable_path(value).ljust(width)",
        "    cells = (value.ljust(width)",
        "a backbone file named with line breaks forges rows of featx-list's table",
    ),
    Mutant(
        "spec/yaml_file.py",
        'raise SpecError(ROOT_KEY, f"{origin} is not a regular file (a device, fifo or socket), not a spec file")',
        'raise SpecError(ROOT_KEY, f"spec file not found: {origin}")',
        "a FIFO or a link to a device in a config root reported as 'spec file not found'",
    ),
    Mutant(
        "construct/execution_order.py",
        "    _check_members_hold_no_token_parameter(model, members, declared)\n",
        "",
        "a stage listing torchvision's ViT encoder adds the position embedding twice (wrong features, no error)",
    ),
    Mutant(
        "nn/reinit.py",
        ' or type(layer).__name__ == "CondConv2d":',
        ":",
        "reinit leaves timm's CondConv2d (one kernel per expert) as it was",
    ),
    Mutant(
        "tasks/extract/transforms.py",
        "    if trained is not None and not _is_imagenet_normalisation(*trained):",
        "    if trained is not None and trained[0] == HALF and trained_half_normalised(spec.model):",
        "center_crop with a timm tag trained with mean = std = 0.5 normalises with ImageNet's mean and std",
    ),
    Mutant(
        "models/published_weights.py",
        "        return tuple(config.mean), tuple(config.std)",
        "        return None",
        "a timm tag's own normalisation is not compared with the transform's",
    ),
    Mutant(
        "nn/freezing.py",
        "    def __init__(self, layer: _BatchNorm) -> None:\n        self._layer = weakref.ref(layer)",
        "    def __init__(self, layer: _BatchNorm) -> None:\n        self._layer = lambda: layer",
        "the reset featx gives a kept layer holds the layer: a dropped backbone's tensors wait for the cycle collector",
    ),
    Mutant(
        "nn/reinit.py",
        "                type(layer).reset_running_stats(layer)  # mean 0, variance 1\n",
        "",
        "reinit keeps the statistics of a kept layer pickled by an earlier featx (no reset_parameters of featx's)",
    ),
    Mutant(
        "nn/backbone.py",
        ' or getattr(self.neck, "input_info", None) is None:',
        ":",
        "a neck of the user's that casts its inputs itself refused for its dtype",
    ),
    Mutant(
        "nn/neck_levels.py",
        "        if type(level.stride) is not int or level.stride < 1:",
        "        if False:",
        "a hand-made neck over a stride of 0 or 16.0: a raw ZeroDivisionError or TypeError",
    ),
    Mutant(
        "construct/builder.py",
        "overrides={[*kept, 'device=cpu']}",
        "overrides={['device=cpu']}",
        "the device=cpu hint of a file saved on a GPU drops the caller's other overrides",
    ),
    Mutant(
        "construct/checkpoint.py",
        "        if not all(key in _NESTING_KEYS for key in holders[0]):",
        "        if True:",
        "the one network under model beside an empty state_dict entry: every layer reported missing",
    ),
    Mutant(
        "construct/checkpoint.py",
        "        if not isinstance(value, torch.Tensor):\n",
        "        if False:\n",
        "a file with an int beside its tensors refused without naming the entry",
    ),
    Mutant(
        "construct/weights.py",
        "    if not set(missing) <= {key[len(prefix) :] for key in unexpected}:",
        "    if True:",
        "a DataParallel state dict (module. before every key) listed as 100 unexpected and 100 missing keys, no hint",
    ),
    Mutant(
        "construct/weights.py",
        'if head[:1] == b"\\x80" or head == b"PK\\x03\\x04" else ""',
        'if False else ""',
        "a torch checkpoint named .safetensors refused as 'header too large' without the hint to rename it",
    ),
    Mutant(
        "construct/builder.py",
        "        if isinstance(error, UnreadableWeightsError):",
        "        if True:",
        "a complete hub cache file of other content called a download that stopped midway",
    ),
    Mutant(
        "construct/builder.py",
        "    try:\n        return path.exists()\n    except (OSError, ValueError):\n        return False",
        "    return path.exists()",
        "a weights name longer than the file system takes: a raw OSError",
    ),
    Mutant(
        "construct/builder.py",
        "os.register_at_fork(after_in_child=_after_fork_in_child)",
        "os.register_at_fork(after_in_child=lambda: None)",
        "a child forked while another thread builds waits forever for the build lock",
    ),
    Mutant(
        "spec/limits.py",
        "\\u2028-\\u202e",
        "\\u202a-\\u202e",
        "a key holding U+2028 breaks an error's line",
    ),
    Mutant(
        "spec/limits.py",
        "\\u200b-\\u200f",
        "\\u200c-\\u200d",
        "a zero-width space or a left-to-right mark in a key shown raw",
    ),
    Mutant(
        "tasks/extract/store.py",
        "        if size >= 0 and inode >= 0:",
        "        if size >= 0 and inode >= 0 and mtime_ns >= 0:",
        "a file dated before 1970 breaks the output folder for good (its identity refused)",
    ),
    Mutant(
        "tasks/extract/store.py",
        "    except FileNotFoundError:\n        running = ",
        "    except ZeroDivisionError:\n        running = ",
        "a shard the manifest lists but is gone called unreadable ('delete it and rerun')",
    ),
    Mutant(
        "tasks/extract/store.py",
        "    if dtype is None:\n        raise FeatxError(",
        "    if False:\n        raise FeatxError(",
        "a settings file with a dtype featx never writes: every row refused as 'in None'",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "    except OSError:\n        return False",
        "    except FileNotFoundError:\n        return False",
        "a glob matching files in a folder that can be listed but not entered: a raw PermissionError",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "        link = stat.S_ISLNK(os.lstat(file).st_mode)\n    except OSError as error:",
        "        link = stat.S_ISLNK(os.lstat(file).st_mode)\n    except FileNotFoundError as error:",
        "a folder that can be listed but not entered stops the whole run with a raw PermissionError",
    ),
    Mutant(
        "tasks/extract/run.py",
        "        isinstance(outputs, (list, tuple, ListConfig)) and all(isinstance(name, str) for name in outputs)",
        "        True",
        "extract.outputs='c3' read as its characters: no output 'c'",
    ),
    Mutant(
        "tasks/extract/run.py",
        '    if name == "weights":\n        height, width',
        "    if False:\n        height, width",
        "with the weights' transform the batch limit counts the unused extract.size: six times the limit runs",
    ),
    Mutant(
        "tasks/extract/run.py",
        "        if outside:\n",
        "        if False:\n",
        "another input's features vanish from the manifest without a word",
    ),
    Mutant(
        "nn/backbone.py",
        "        return copy.deepcopy(self._spec)",
        "        return self._spec",
        "editing bb.spec to build a variant changes the built backbone's norm policy and what featx.save writes",
    ),
    Mutant(
        "nn/backbone.py",
        "        self._spec = copy.deepcopy(spec)",
        "        self._spec = spec",
        "a hand-made Backbone follows later edits of the caller's spec object",
    ),
    Mutant(
        "nn/backbone.py",
        " or not _raised_in_library_code(error):",
        ":",
        "a forward hook's error mentioning a shape becomes an InputShapeError blaming the input",
    ),
    Mutant(
        "nn/backbone.py",
        '(f" (autocast does not cast {uncast})" if autocast or not castable else',
        '(f" (autocast does not cast {uncast})" if autocast else',
        "a float64 input told to run under torch.autocast, which refuses it",
    ),
    Mutant(
        "cli/command_line.py",
        "    if flags.config_path is not None:",
        "    if False:",
        "featx -cp DIR takes DIR's config.yaml without featx's checks and writes outputs/ into the working directory",
    ),
    Mutant(
        "cli/command_line.py",
        "    if flags.resolve and not (flags.cfg or flags.help):",
        '    if "--resolve" in given and not {"--cfg", "-c"} & set(given):',
        "--cfg=job --resolve refused as 'use it with --cfg job'",
    ),
    Mutant(
        "cli/app.py",
        '    if "--version" in given:',
        "    if False:",
        "featx --version prints Hydra's version alone",
    ),
    Mutant(
        "cli/sweeps.py",
        "        return len(value.filter(options_of(override.key_or_group)))",
        "        return None",
        "backbone=glob(*) times a 10,000-value range: 1.17 million jobs composed one by one",
    ),
    Mutant(
        "cli/output_folders.py",
        "        self._check_sweep_size(config)\n",
        "",
        "a config's own hydra.sweeper.params range of 10^8 values fills the memory",
    ),
    Mutant(
        "cli/output_folders.py",
        "        if not _JOB_NUMBER.search(str(subdir)):",
        "        if False:",
        "hydra.sweep.subdir=7: every job of a sweep writes its log and config record into one folder",
    ),
    Mutant(
        "construct/plan_cache.py",
        "        if given is None and not own:",
        "        if given is None:",
        "featx-list takes a user cache entry a patched process wrote (strides 4,4,4 for 4,8,16)",
    ),
    Mutant(
        "construct/plan.py",
        "declared, tokens, size_blamed=True)",
        "declared, tokens)",
        "an input_size too small for the last stage blamed on the stage list's order",
    ),
    Mutant(
        "construct/members.py",
        '                f"{quoted(path)} not found: {where} has no child {quoted(part)}',
        '                f"{path!r} not found: {where} has no child {part!r}',
        "a 200,000-character module path quoted whole in the error",
    ),
    Mutant(
        "spec/validate.py",
        'f"unknown stage {quoted(name)}',
        'f"unknown stage {name!r}',
        "a 200,000-character out_features name quoted whole in the error",
    ),
    Mutant(
        "spec/yaml_file.py",
        '    if ":" in digits or (len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()):',
        "    if False:",
        "seed: 017 in a file is octal 15, seed=017 as an override 17: one spec, two networks",
    ),
    Mutant(
        "errors.py",
        "        self.message = _cut(message)",
        "        self.message = message",
        "SpecError.message holds a hostile value whole (megabytes)",
    ),
    Mutant(
        "__init__.py",
        '    if name in _LAZY_MODULES:\n        return importlib.import_module(f"featx.{name}")\n',
        "",
        "featx.export.export_backbone (as docs/export.md writes it) is an AttributeError after import featx",
    ),
    Mutant(
        "construct/proposal_yaml.py",
        "    text = _NOT_IN_COMMENT.sub(lambda found: repr(found.group())[1:-1], text)\n",
        "",
        "featx-propose -o with U+FFFF (no character of a YAML file) in the name writes a file featx cannot load",
    ),
    Mutant(
        "construct/propose.py",
        "        if min_stride > stride:",
        "        if False:",
        "featx.propose('vit_b_16', min_stride=64) silently returns stages at stride 16",
    ),
    Mutant(
        "files.py",
        '_YES, _NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")',
        '_YES, _NO = ("1", "true", "yes", "on", "false", "no", "off"), ("", "0")',
        "FEATX_NO_CACHE=false turns the cache off",
    ),
    Mutant(
        "files.py",
        "    if value in _YES or value in _NO:",
        "    if True:",
        "FEATX_OFFLINE=maybe read as no without a word",
    ),
    Mutant(
        "construct/plan_data.py",
        "MAX_PLANNED_WIDTH = 1 << 16",
        "MAX_PLANNED_WIDTH = 1 << 60",
        "a cached plan of 2**40 channels taken (an FPN then allocates for them)",
    ),
    Mutant(
        "construct/plan_data.py",
        '_count(data["stride"], maximum=MAX_SIDE), tuple(paths)',
        '_count(data["stride"], maximum=1 << 62), tuple(paths)',
        "a cached plan of stride 2**60 taken, its error blamed on the spec",
    ),
    Mutant(
        "cli/extract.py",
        "at {rate:.1f} files/s",
        "at {rate:.1f} images/s",
        "featx-extract's summary counts skipped files as images per second",
    ),
    Mutant(
        "tasks/export.py",
        '        warnings.filterwarnings("ignore", message="No complete tensor found", category=UserWarning)\n',
        "",
        "torch's 'No complete tensor found' notice printed by featx-export of a channels_last backbone",
    ),
    Mutant(
        "spec/load.py",
        '        message += f"; it takes {_INTEGER_KEYS[full_key]}"',
        "        pass",
        "frozen_stages: c2 refused with OmegaConf's bare line (no count, no range)",
    ),
    Mutant(
        "files.py",
        '    return ArgumentError(f"{what}: {printable_path(path)} exists; {hint} (nothing was written)")',
        '    return ArgumentError(f"{what}: {path} exists; {hint} (nothing was written)")',
        "an output name holding ESC and a newline printed raw in the refusal",
    ),
    Mutant(
        "cli/app.py",
        '                reason = str(stop.code).removeprefix(f"{app}: error: ")',
        "                reason = str(stop.code)",
        "a failed sweep job's error says featx: error: twice",
    ),
    Mutant(
        "cli/app.py",
        "        shown.append(as_typed(typed.get(key, argument)))",
        "        shown.append(as_typed(argument))",
        "a failed sweep job named with Hydra's run=False, not the run=false typed",
    ),
    Mutant(
        "nn/backbone.py",
        "        if not os.path.abspath(traceback.tb_frame.f_code.co_filename).startswith(folders):\n"
        "            return False\n        traceback = traceback.tb_next",
        "        traceback = traceback.tb_next",
        "a hook of yours whose torch call refuses a shape: the error becomes an InputShapeError blaming the input",
    ),
    Mutant(
        "tasks/extract/store.py",
        " if stored.path not in current and not stored.reason})",
        " if stored.path not in current})",
        "a skipped file of another input counted among the features the manifest leaves out",
    ),
    Mutant(
        "construct/checkpoint.py",
        "            if count == 1 and holders[0] and holders[0] != followed",
        "            if count == 1 and holders[0]",
        "a nested state dict with an int entry told to save the dict featx already took alone",
    ),
    Mutant(
        "cli/sweeps.py",
        "        if isinstance(value, RangeSweep) and value.step == 0:",
        "        if False:",
        "range(1,9,0): Python's own 'range() arg 3 must not be zero', without the key",
    ),
    Mutant(
        "cli/command_line.py",
        "    check_sweeper_params(app, overrides)\n",
        "",
        "hydra.sweeper.params={...} on the command line: OmegaConf's AttributeError",
    ),
    Mutant(
        "tasks/extract/ranks.py",
        "    if world == 1:\n        return\n    gathered",
        "    if True:\n        return\n    gathered",
        "nodes whose weights files differ store features of two networks in one folder",
    ),
    Mutant(
        "tasks/extract/ranks.py",
        "    with ranks_fail_together(world):\n        if rank == 0:\n            listing",
        "    if True:\n        if rank == 0:\n            listing",
        "rank 0's listing fails and rank 1 waits for the listing until gloo's timeout",
    ),
    Mutant(
        "tasks/extract/ranks.py",
        "    if dist.is_available() and dist.is_initialized():",
        "    if False:",
        "a process group the caller started is ignored: each rank takes the whole run",
    ),
    Mutant(
        "tasks/extract/ranks.py",
        "    if rank >= world:",
        "    if False:",
        "RANK=2 of WORLD_SIZE=2: a raw gloo traceback, rank 0 waits for ever",
    ),
    Mutant(
        "tasks/extract/ranks.py",
        '    except ValueError:\n        raise ArgumentError(f"{variable}:',
        '    except KeyError:\n        raise ArgumentError(f"{variable}:',
        "WORLD_SIZE=abc: int()'s ValueError without the variable's name",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "        matches = [match for match in matches if linked[match] is None]",
        "        matches = list(matches)",
        "photos/*/*.png enters a link out of the input, and a link to its own folder lists an image many times",
    ),
    Mutant(
        "cli/user_configs.py",
        "            problem = problem_with(key, schema, [value])\n            if problem is not None:",
        "            problem = problem_with(key, schema, [value])\n            if False:",
        "extract.overwrite: 2 in a user's config file taken as true: a folder of features replaced",
    ),
    Mutant(
        "cli/user_configs.py",
        '                    if config.startswith("backbone/"):  # OmegaConf would take channels_last: 2 as true',
        "                    if False:",
        "channels_last: 2 in a user's backbone file taken as true by the apps, refused by featx.build",
    ),
    Mutant(
        "cli/catalog.py",
        "        if not cache_disabled():\n            user_cache_dir()",
        "        if False:\n            user_cache_dir()",
        "FEATX_NO_CACHE=maybe: featx-list prints the error in every row's notes",
    ),
    Mutant(
        "cli/app.py",
        'if not Path(os.environ.get("TMPDIR", "/")).is_absolute():',
        "if False:",
        "TMPDIR=. puts the run folders (Hydra's logs, .hydra/) into the working directory",
    ),
    Mutant(
        "tasks/extract/run.py",
        "        if name in names[:position]:",
        "        if False:",
        "extract.outputs=[c5,c5] taken as [c5]",
    ),
    Mutant(
        "cli/user_configs.py",
        'problem = None if key == "defaults" else problem_with(f"backbone.{key}", schema, [value])',
        "problem = None",
        "seed: abc in a user's backbone file: Hydra's message names the file, not the key",
    ),
    Mutant(
        "cli/override_checks.py",
        '    keys = [key for key in valid if not key.startswith("_")]',
        "    keys = list(valid)",
        "an unknown backbone key lists Hydra's _target_ as valid",
    ),
    Mutant(
        "spec/load.py",
        '            expected = "a list (or null)" if type(None) in typing.get_args(hint) else "a list"',
        '            expected = "a list (or null)"',
        "reinit='' answered 'expected a list (or null)', though reinit refuses null",
    ),
    Mutant(
        "models/timm_models.py",
        "    if not dot and is_model(name):",
        "    if not tag and is_model(name):",
        "timm:resnet18. (an empty tag) is taken as a model of its own",
    ),
    Mutant(
        "models/meta_construction.py",
        '        with torch.device("cpu"), _on_registration(lambda index, tensor: False, record):',
        '        with torch.device("cpu"), _on_registration(lambda index, tensor: True, record):',
        "a constructor that runs its own layers (timm < 1.0.21's hybrid ViTs) fails: its layers are moved to meta",
    ),
    Mutant(
        "models/meta_construction.py",
        "    if model is None or mismatches:",
        "    if mismatches:",
        "a constructor that runs a layer the backbone drops (left on meta) is not constructed whole: the build fails",
    ),
    Mutant(
        "construct/probe.py",
        "                layer.training = False  # the layer's own mode only: its children keep theirs",
        "                pass",
        "timm's BatchNormAct2d probed in training mode: an input_size with a 1x1 map is refused",
    ),
    Mutant(
        "tasks/export.py",
        "    if differences[worst] <= tolerances[worst]:\n        return largest, None\n",
        "    if True:\n        return largest, None\n",
        "an export computing other values than eager written",
    ),
    Mutant(
        "tasks/export.py",
        "    if branch is not None:\n",
        "    if False:\n",
        "a TorchScript trace that keeps the branch on values its example took written (max_abs_diff 0.0)",
    ),
    Mutant(
        "tasks/export.py",
        "    branch = next((warning for warning in warned if (warning.filename, warning.lineno) in value_sites), None)",
        "    branch = next(iter(warned), None)",
        "Swin's branch on its padded size refused as a branch on values",
    ),
    Mutant(
        "tasks/export.py",
        "_TO_PYTHON = (Tensor.__bool__, Tensor.item, Tensor.__int__, Tensor.__float__, Tensor.__index__)",
        "_TO_PYTHON = (Tensor.__bool__,)",
        "x / 255 if x.max().item() > 1 else x: the trace of a branch on a Python number written, wrong on 0..1 images",
    ),
    Mutant(
        "tasks/export.py",
        "max(RELATIVE_TOLERANCE, 16 * types.eps) * float(value.abs().max()) + types.tiny",
        "max(RELATIVE_TOLERANCE, 16 * types.eps) * (1 + float(value.abs().max()))",
        "an output of scale 1e-13 under an absolute 1e-4 floor: not checked",
    ),
    Mutant(
        "tasks/export.py",
        "    if differences[worst] <= tolerances[worst]:\n",
        "    if largest <= max(tolerances.values()):\n",
        "a small output 50 % wrong passes under the tolerance of a large one",
    ),
    Mutant(
        "tasks/export.py",
        "    with torch.no_grad():\n"
        "        traced: torch.nn.Module = torch.jit.trace(backbone, example, strict=False)\n",
        "    with contextlib.nullcontext():\n"
        "        traced: torch.nn.Module = torch.jit.trace(backbone, example, strict=False)\n",
        "a ViT's TorchScript trace fails torch's sanity check (MultiheadAttention's slow path traced)",
    ),
    Mutant(
        "tasks/export.py",
        '    return dynamic and format != "torchscript"',
        "    return dynamic",
        "a TorchScript failure advises dynamic=False, which changes nothing",
    ),
    Mutant(
        "tasks/export.py",
        '            if unit_sides and format != "torchscript":\n',
        "            if False:\n",
        "a dynamic export refused for a 1x1 output advises only dynamic=False, not a larger size",
    ),
    Mutant(
        "tasks/export.py",
        "    if torch.is_autocast_enabled(example.device.type):",
        "    if False:",
        "an ONNX file refused under autocast advises 'a float32 backbone' for a float32 one",
    ),
    Mutant(
        "cli/export.py",
        "wrote {printable_path(result.path)} (",
        "wrote {result.path} (",
        "featx-export prints a written path's terminal escapes raw",
    ),
    Mutant(
        "tasks/export.py",
        'return f"{type(error).__name__}: {escaped(first_line(error))}"',
        'return f"{type(error).__name__}: {first_line(error)}"',
        "torch's terminal colours raw in featx's export errors",
    ),
    Mutant(
        "tasks/export.py",
        "what=keys.path, hint=keys.overwrite)",
        'what="export.path", hint="set overwrite (export.overwrite=true) to replace it")',
        "export_backbone names the app's keys (export.path, export.overwrite=true) in Python",
    ),
    Mutant(
        "cli/user_configs.py",
        '                queue.append((found, name.rpartition("/")[0]))',
        "                pass",
        "run: 'no' in a file the user's primary config brings in second (defaults: [config, extra]): taken as false",
    ),
    Mutant(
        "tasks/extract/listing.py",
        '        crossed = _linked_folders_crossed(base, pattern) if "**" in Path(pattern).parts else set()',
        "        crossed: Set[Path] = set()",
        "extract.input: photos/**/*.png leaves out the images below linked folders without naming the links",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "            if not _enters((*below, name), components):",
        "            if False:",
        "extract.input: a ** pattern names as skipped linked folders it would never enter",
    ),
    Mutant(
        "construct/execution_order.py",
        "                            if owned\n",
        "                            if not owned\n",
        "tokens.position: null on ViT: the error says list 'encoder' whole, not that its position embedding is missing",
    ),
    Mutant(
        "construct/model_structure.py",
        "        have_modules[path] = (_described(module), _tensor_shapes(module), settings)",
        "        have_modules[path] = (_described(module), _tensor_shapes(module), compared)",
        "save: a FrozenBatchNorm2d eps (or Swin shift_size) changed by hand is saved, and loads as the spec's value",
    ),
    Mutant(
        "construct/model_structure.py",
        "        compared = want_modules[path][2] if path in want_modules else {}",
        "        compared = _settings(module)",
        "save: an attribute added by hand to a module (a tag the spec's modules lack) refuses the save",
    ),
    Mutant(
        "construct/checkpoint.py",
        '        expected = {key: value for key, value in expected.items() if not key.startswith("neck.")}',
        "        pass",
        "build: a featx.save trunk under a spec with an FPN is refused (the FPN's keys missing from the file)",
    ),
    Mutant(
        "construct/checkpoint.py",
        '    unbuilt += ("neck.",) if spec.fpn is None else ()',
        "    unbuilt += ()",
        "load(fpn=null): a file's FPN cannot be left out to take the trunk alone",
    ),
    Mutant(
        "construct/checkpoint.py",
        "    if differing:  # before out_features: a simple pyramid",
        "    if False:  # before out_features: a simple pyramid",
        "load: an FPN override of other width is refused as keys that do not fit, without naming fpn",
    ),
    Mutant(
        "construct/builder.py",
        'meta=device.type == "meta" or (saved is not None and saved.fpn is not None)',
        'meta=device.type == "meta" or saved is not None',
        "build: the FPN a spec adds over a featx.save trunk is left without values",
    ),
    Mutant(
        "cli/output_folders.py",
        '            if path.suffix == ".yaml" and path.is_file() and not _is_featx_record(record):',
        "            if False:",
        "hydra.run.dir at another Hydra app's run folder: Hydra replaces the user's .hydra/config.yaml",
    ),
    Mutant(
        "cli/output_folders.py",
        "            return _FEATX_RECORD_MARK.encode() in record.read(_RECORD_BYTES)",
        "            return False",
        "hydra.run.dir at a featx run's own folder: the rerun is refused as if the record were the user's",
    ),
    Mutant(
        "cli/output_folders.py",
        '            record = path if path.name == "multirun.yaml" else path.parent / "hydra.yaml"',
        '            record = path.parent / "hydra.yaml"',
        "hydra.sweep.dir at another Hydra app's sweep folder: its multirun.yaml is replaced",
    ),
    Mutant(
        "construct/weights.py",
        '    shown = "; ".join(f"{shortened(key)} {describe(key)}" for key in keys[:_SHOWN])',
        '    shown = "; ".join(shortened(f"{key} {describe(key)}") for key in keys[:_SHOWN])',
        "weights: a long key's entry is cut with the dtypes it compares (vs model torch.f...)",
    ),
    Mutant(
        "construct/weights.py",
        '        if head[:4] == b"PK\\x03\\x04":  # a zip\'s first record, without the listing a zip ends with',
        "        if False:",
        "weights: a .pth cut short is called neither a zip archive nor a pickle",
    ),
    Mutant(
        "nn/backbone.py",
        "        if not isinstance(mode, bool):  # torch's refusal (a ValueError too) came from deep inside nn.Module",
        "        if False:",
        "train('no'): torch's raw ValueError from inside nn.Module",
    ),
    Mutant(
        "files.py",
        "        remove_empty_folders(folders)\n        raise\n",
        "        raise\n",
        "save(..., 'new/../mine.pt') refused as existing: the folder new/ made for it is left behind",
    ),
    Mutant(
        "cli/hydra_errors.py",
        "    stage = _unknown_stage(error)\n    if stage is not None:\n        return stage\n",
        "",
        "backbone.stages.C5.modules=...: Hydra's 'Key C5 is not in struct' advising +, without the file's stages",
    ),
    Mutant(
        "cli/hydra_errors.py",
        '        return None if key.rpartition(".")[2] in keys else unknown_key(key, keys)',
        "        return None",
        "backbone.stages.c3.modlues=...: Hydra's raw refusal, not the stage's keys",
    ),
    Mutant(
        "construct/probe.py",
        "    declared = _declared_channels(module)\n",
        "    declared = None\n",
        "the input channels a timm model declares (in_chans, pretrained_cfg) ignored",
    ),
    Mutant(
        "construct/probe.py",
        "for channels in (found, 3)}",
        "for channels in (found,)}",
        "the first in_channels layer's count used after a SpaceToDepth (TResNet fed 48 channels)",
    ),
    Mutant(
        "construct/probe.py",
        "        directions = 2 if layer.bidirectional else 1",
        "        directions = 1",
        "a bidirectional LSTM's planned width is half its output's",
    ),
    Mutant(
        "construct/probe.py",
        "        width = layer.proj_size or layer.hidden_size",
        "        width = layer.hidden_size",
        "an LSTM with projections planned at its hidden size",
    ),
    Mutant(
        "construct/probe.py",
        "        batch = (x.shape[batch_dim],) if batched else ()",
        "        batch = (x.shape[0],) if batched else ()",
        "a sequence-first LSTM's states planned with the sequence length as the batch",
    ),
    Mutant(
        "construct/probe.py",
        "        layer.check_input(x if batched else x.unsqueeze(batch_dim), None)",
        "        pass",
        "a planned LSTM takes an input of another width or dtype than its real forward does",
    ),
    Mutant(
        "construct/probe.py",
        "        if not isinstance(layer, nn.LSTM):\n            return output, hidden",
        "        if isinstance(layer, nn.LSTM):\n            return output, hidden",
        "a planned LSTM gives one state, a GRU two",
    ),
    Mutant(
        "nn/backbone.py",
        "            if self._widths_disagree(error, given):",
        "            if False:",
        "a replaced layer's width that breaks a residual sum is blamed on the input's size",
    ),
    Mutant(
        "nn/backbone.py",
        "        return given[2] % stride == 0 and given[3] % stride == 0",
        "        return True",
        "a mismatch at an input size the backbone may not take is blamed on the layers' widths",
    ),
    Mutant(
        "nn/backbone.py",
        '        checked = [("input_names", keys)] if input_names is not None else []',
        '        checked = [("input_names", keys)]',
        "a neck without input_names naming a map twice in feature_info is blamed on its input_names",
    ),
    Mutant(
        "spec/load.py",
        "        _check_single_values(literal)\n",
        "",
        "norm=[eval]: OmegaConf's \"Cannot convert 'ListConfig' to string\", no key's choices",
    ),
    Mutant(
        "spec/load.py",
        "        return data.item()",
        "        return data",
        'np.int64(3) as a seed: OmegaConf\'s "not a supported primitive type"',
    ),
    Mutant(
        "spec/load.py",
        "        return str(data)",
        "        return data",
        "torch.device('cpu') as the device: OmegaConf's \"not a supported primitive type\"",
    ),
    Mutant(
        "files.py",
        '        reason = "not empty" if text == "" else "without NUL characters"',
        '        reason = "without NUL characters"',
        "an empty path on a command line is refused as holding NUL characters",
    ),
    Mutant(
        "spec/load.py",
        "            if single is str and isinstance(value, bool):",
        "            if False:",
        "weights: false is refused as the weights name 'False'",
    ),
    # export: the check at a smaller size, static TorchScript files, what one ONNX file cannot hold
    Mutant(
        "tasks/export.py",
        "    if not dynamic:\n        traced = torch.jit.script(_FixedShape(traced, example.shape))",
        "    if False:\n        traced = torch.jit.script(_FixedShape(traced, example.shape))",
        "a dynamic=False TorchScript file runs at any shape, computing the traced size's arithmetic there",
    ),
    Mutant(
        "tasks/export.py",
        "        if list(x.shape) != self.shape:",
        "        if list(x.shape)[1:] != self.shape[1:]:",
        "a dynamic=False TorchScript file takes another batch size than its own",
    ),
    Mutant(
        "tasks/export.py",
        "    if size > ONNX_ONE_FILE_BYTES:",
        "    if size > 2 * ONNX_ONE_FILE_BYTES:",
        "an ONNX export over 1.5 GiB writes its weights to a hidden .partial.data file, leaked on each overwrite",
    ),
    Mutant(
        "tasks/export.py",
        "    if any(info.name == ONNX_INPUT for info in backbone.feature_info):",
        "    if False:",
        "a stage named 'image' makes an invalid ONNX file (a duplicate name), reported as written without onnxruntime",
    ),
    Mutant(
        "files.py",
        "{re.escape(PARTIAL_SUFFIX)}(?:\\.data)?",
        "{re.escape(PARTIAL_SUFFIX)}",
        "the 2.4 GB .partial.data an older ONNX export left beside a killed writer's file is never removed",
    ),
    # hub cache files checked against the hash in their name, remembered once verified
    Mutant(
        "models/weights_enums.py",
        "    check_named_hash(path, label, member.url)\n    return path\n",
        "    return path\n",
        "another network's weights at a torchvision enum's cache name are used silently",
    ),
    Mutant(
        "models/weights_enums.py",
        "    return named.group(1) if named and named.group(1) else None",
        "    return None",
        "the hash in a hub cache file's name is never found: another network under the name is used silently",
    ),
    Mutant(
        "file_records.py",
        '    if entry.get("identity") != _identity(path, status):\n        return None\n',
        "",
        "a record of a file is trusted after the file changed",
    ),
    Mutant(
        "models/weights_enums.py",
        '    if folder is not None:\n        remember_facts(folder, absolute, status, {"sha256": digest})\n',
        "",
        "a verified file is hashed again at every build",
    ),
    # Hugging Face hub cache: the blob to delete
    Mutant(
        "construct/builder.py",
        'delete = "it" if target == os.path.abspath(path) else f"{target} (the file it links to)"',
        'delete = "it"',
        "a damaged Hugging Face cache file's advice names the snapshot link, not the blob the hub links again",
    ),
    # timm's URL-only weights: lstat, and no hash check
    Mutant(
        "models/weights_enums.py",
        "        os.lstat(path)\n        return path\n",
        "        if not path.is_file():\n            raise FileNotFoundError\n        return path\n",
        "a folder or fifo at a hub cache name (torchvision's or timm's URL weights) is taken for no file (downloaded "
        "into, or named as the place)",
    ),
    Mutant(
        "models/timm_weights.py",
        "cached_weights_path(config.url), label, hash_prefix=None)",
        'cached_weights_path(config.url), label, __import__("featx.models.weights_enums", fromlist=["x"])'
        ".named_hash_prefix(cached_weights_path(config.url)))",
        "timm's URL weights are checked against a 'hash' their names need not carry (I-JEPA's '300e')",
    ),
    # TorchScript archives
    Mutant(
        "construct/weights.py",
        "    if is_zip and _is_torchscript(path):",
        "    if False:",
        "a TorchScript file as weights leaks torch's warning and a cut reason",
    ),
    Mutant(
        "construct/weights.py",
        'return any(name == "constants.pkl" or name.startswith("code/") for name in inner)',
        'return any(name == "constants.pkl" for name in names)',
        "a TorchScript archive is not recognised (its records are under the archive's folder)",
    ),
    # a training checkpoint's argparse.Namespace
    Mutant(
        "construct/weights.py",
        '    if not named.endswith("GLOBAL argparse.Namespace"):',
        "    if True:",
        "a training checkpoint with its arguments is refused with no way out",
    ),
    # did you mean DEFAULT?
    Mutant(
        "models/weights_enums.py",
        "{suggest(name, ['DEFAULT', *members])}",
        "{suggest(name, members)}",
        "weights=default gets no 'did you mean DEFAULT?'",
    ),
    Mutant(
        "models/timm_models.py",
        "{suggest(tag, ['DEFAULT', *tags])}",
        "{suggest(tag, tags)}",
        "a timm model's weights=default gets no 'did you mean DEFAULT?'",
    ),
    # the offline message's path is absolute
    Mutant(
        "models/weights_enums.py",
        "Path(os.path.abspath(torch.hub.get_dir()))",
        "Path(torch.hub.get_dir())",
        "a relative TORCH_HOME gives a relative 'Place the file at' path",
    ),
    Mutant(
        "construct/propose.py",
        "        return (chain, None) if chain.irregular is not None else (fixed, [crop, crop])",
        "        return fixed, [crop, crop]",
        "a model taking any size probed at its crop size alone (sequencer2d_s's stride 7 read as 8)",
    ),
    Mutant(
        "construct/propose.py",
        "        check_neck(loaded, plan_backbone(loaded, construct_on_meta(loaded.model)[0]))",
        "        pass",
        "a proposal featx.build refuses is returned (and printed by featx-propose, exit 0)",
    ),
    Mutant(
        "construct/propose.py",
        "{_OPTIONS[name] if options else f'propose(): {name}'} must be",
        "{f'propose(): {name}'} must be",
        "featx-propose's errors name propose()'s parameters (frozen_stages), not its options (--frozen-stages)",
    ),
    Mutant(
        "construct/propose.py",
        "{MAX_CHANNELS}{'' if options else ' or None'}",
        "{MAX_CHANNELS} or None",
        "featx-propose --fpn -1 says the value may be None, which no command line can give",
    ),
    Mutant(
        "tasks/detection.py",
        "        if len(set(level)) < len(level):  # whole pixels: sizes within one octave of a small stride coincide",
        "        if False:",
        "anchor_generator(sizes_per_octave=8, size_per_stride=1): equal anchor sizes (4, 4, 4, ...) in one level",
    ),
    Mutant(
        "spec/overrides.py",
        "    if long is not None:",
        "    if False:",
        "an override of 5,000 characters parsed and applied, past the bound on one override",
    ),
    Mutant(
        "construct/checkpoint.py",
        """and (name != "extra_blocks" or "p6p7" in (file_fpn[name], spec_fpn[name]))""",
        "",
        "load(fpn.extra_blocks=maxpool) of an FPN file saved without extra levels refused, though no tensor differs",
    ),
    Mutant(
        "spec/overrides.py",
        "if override.type is OverrideType.ADD and present and not isinstance(value, (dict, list)):",
        "if override.type is OverrideType.ADD and present:",
        "'+reinit=[c5]' on a set key refused, which the featx app takes",
    ),
    Mutant(
        "spec/overrides.py",
        "and present and not isinstance(value, (dict, list)):",
        "and present and not isinstance(value, list):",
        "'+stages={...}' on set stages refused, which the featx app takes",
    ),
    Mutant(
        "spec/load.py",
        "raise _with_prefix_hint(error, overrides or ()) from None",
        "raise error from None",
        "'~backbone.fpn' (the app's prefix) refused without the hint to drop 'backbone.'",
    ),
    Mutant(
        "spec/load.py",
        'if first == _APP_NODE and re.split(r"[.=\\[]", rest, maxsplit=1)[0] in fields:',
        "if first == _APP_NODE:",
        "the hint to drop 'backbone.' given where the rest names no spec key",
    ),
    Mutant(
        "spec/yaml_file.py",
        "return path.suffix.lower() in SPEC_SUFFIXES",
        "return path.suffix in SPEC_SUFFIXES",
        "MY.YAML taken as a packaged name and ./MY.YAML refused as no .yaml file",
    ),
    Mutant(
        "spec/load.py",
        "return is_spec_suffix(Path(text)) or",
        'return Path(text).suffix in (".yaml", ".yml") or',
        "a bare MY.YAML looked up as a packaged name",
    ),
    Mutant(
        "construct/model_structure.py",
        "    for cell in function.__closure__ or ():\n",
        "    for cell in ():\n",
        "an entry made with a forward closing over pool=True used for the same forward with pool=False",
    ),
    Mutant(
        "construct/plan_cache.py",
        "    if cache_disabled() or _hooks_on_every_module():\n",
        "    if cache_disabled():\n",
        "an entry made without a forward hook on every module used with one (strides 4, 8 for maps at 16, 128)",
    ),
    # extract: Pillow's process-wide settings, tampered shards and manifests, the output folder a pattern matches,
    # path-like options, WORLD_SIZE=1 (review A)
    Mutant(
        "tasks/extract/decode.py",
        "ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = False, PILLOW_PIXEL_LIMIT",
        "pass",
        "LOAD_TRUNCATED_IMAGES=True and MAX_IMAGE_PIXELS=None of the process let half a JPEG and a bomb through",
    ),
    Mutant(
        "tasks/extract/decode.py",
        "ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = truncated, pixels",
        "pass",
        "the caller's Pillow settings are not given back after decoding",
    ),
    Mutant(
        "tasks/extract/decode.py",
        "if pixels > 2 * PILLOW_PIXEL_LIMIT:",
        "if False:",
        "a huge JPEG header passes to the device decoder with MAX_IMAGE_PIXELS=None",
    ),
    Mutant(
        "tasks/extract/store.py",
        "if not isinstance(skipped, list):",
        "if False:",
        "a shard record's skipped: 5 raises TypeError",
    ),
    Mutant(
        "tasks/extract/store.py",
        "if shape[0] != rows:",
        "if False:",
        "a shard whose outputs hold fewer rows than its images is accepted",
    ),
    Mutant(
        "tasks/extract/store.py",
        """                _identity(entry.get("identity"))
""",
        "",
        "a manifest line's identity: 5 raises TypeError",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "(not below.parts or is_own_name(below.parts[0]))",
        "(len(below.parts) > 0 and is_own_name(below.parts[0]))",
        "input='gl/*' output=gl/feats skips gl/feats and writes a shard for it on every rerun",
    ),
    Mutant(
        "tasks/extract/listing.py",
        "if _left_out(absolute, folder):",
        "if False:",
        "a pattern lists the output folder's featx-shards folder as a skipped folder",
    ),
    Mutant(
        "tasks/extract/run.py",
        "text = os.fspath(value) if isinstance(value, os.PathLike) else value",
        "text = value",
        "ExtractOptions(input=Path(...)) refused",
    ),
    Mutant(
        "tasks/extract/ranks.py",
        """    if os.environ.get("WORLD_SIZE") is None:
        return 1, 0
    world = _whole_number("WORLD_SIZE", 1, 1)
""",
        """    world = _whole_number("WORLD_SIZE", 1, 1)
    if world == 1:
        return 1, 0
""",
        "RANK=1 WORLD_SIZE=1 runs as rank 0",
    ),
    Mutant(
        "cli/catalog.py",
        "        except TimmNotInstalled:  # a packaged timm_* file",
        "        except ():  # a packaged timm_* file",
        "featx-list without timm exits 1, counting featx's own timm_* files as failures to plan",
    ),
    Mutant(
        "cli/catalog.py",
        '    except TimmNotInstalled:\n        parser.exit(1, f"featx-list: error: --timm lists',
        '    except ():\n        parser.exit(1, f"featx-list: error: --timm lists',
        "featx-list --timm without timm: the message names backbone.model, which the user never typed",
    ),
    Mutant(
        "models/registry.py",
        "        kind = _other_torchvision_kind(name)\n",
        "        kind = None\n",
        "fasterrcnn_resnet50_fpn called an unknown torchvision model",
    ),
    # fix D1: low-precision layers under autocast of another dtype, autocast suggested with the layers' dtype
    Mutant(
        "nn/backbone.py",
        "if autocast and low and (autocast_dtype := torch.get_autocast_dtype(device_type)) != reference.dtype:",
        "if False and (autocast_dtype := torch.get_autocast_dtype(device_type)) != reference.dtype:",
        "float16 layers under bfloat16 autocast reach torch's raw 'mixed dtype' RuntimeError",
    ),
    Mutant(
        "nn/backbone.py",
        'suggestion = f"torch.autocast({device_type!r}, dtype={reference.dtype})" if low else "torch.autocast"',
        'suggestion = "torch.autocast"',
        "float16 layers are told to run under plain torch.autocast, whose CPU bfloat16 then fails",
    ),
    # fix D2: bb.in_channels settable, validated, named in the refusals
    Mutant(
        "nn/backbone.py",
        "if not integral or not 1 <= int(value) <= MAX_CHANNELS:",
        "if False:",
        "bb.in_channels = 0 (or '4', True) is taken unchecked",
    ),
    Mutant(
        "nn/backbone.py",
        'if channels is not None and where != "the neck" and _raised_in_library_code(error):',
        "if False:",
        "a first layer refusing the input's channels is reported as an input-size problem",
    ),
    Mutant(
        "nn/backbone.py",
        'if tuple(map(int, refusal.group(1).split(","))) == tuple(given):',
        "if True:",
        "a layer inside a stage refusing its width is blamed on bb.in_channels",
    ),
    # fix D3: copy.copy(bb) has its own module tables
    Mutant(
        "nn/backbone.py",
        "clone.__dict__[table] = self.__dict__[table].copy()",
        "clone.__dict__[table] = self.__dict__[table]",
        "a shallow copy shares _modules: dropping its neck drops the original's too",
    ),
    # fix D4: an inference tensor given to a training stage
    Mutant(
        "nn/backbone.py",
        'if isinstance(error, RuntimeError) and _INFERENCE_TENSOR in str(error) and where != "the neck":',
        "if False:",
        "an inference-mode input to a training stage gives torch's raw RuntimeError",
    ),
    # fix D5: a featx Backbone's own state_dict given as weights
    Mutant(
        "construct/weights.py",
        "if not unexpected or not ours or not any(",
        "if not unexpected or not any(",
        "a torchvision file with a stray stages.* key gets the Backbone state_dict hint",
    ),
    # fix D6: frozen_stage_names's docstring
    Mutant(
        "nn/backbone.py",
        "``requires_grad_`` of your own may since have changed their parameters",
        "``requires_grad_`` of your own changes parameters alone",
        "the docstring claims again what requires_grad_ can make untrue",
    ),
    Mutant(
        "construct/propose.py",
        "    return dataclasses.replace(fixed, irregular=fixed.irregular or chain.irregular), None",
        "    return fixed, None",
        "timm:convmixer_768_32 refused as having 'stride 8 only' (its stride is 7)",
    ),
    Mutant(
        "cli/output.py",
        "    if sys.stderr is None:\n        return\n    with contextlib.suppress(OSError, ValueError):\n",
        "    with contextlib.suppress(OSError, ValueError):\n",
        "featx-list 2>&- writes its count line into the table on stdout",
    ),
    # timm ViTs whose embedding returns N x h x w x C; the missing-prefix hint
    Mutant(
        "construct/token_layout.py",
        "    returns_tokens = len(shape) == 3 or _channels_last(model, embed, in_channels, side, shape)",
        "    returns_tokens = len(shape) == 3",
        "an N x h x w x C embedding (timm's dynamic_img_size) read as N x C x h x w",
    ),
    Mutant(
        "construct/token_layout.py",
        "        return wide[2] != shape[2]",
        "        return shape[1] == shape[2]",
        "N x h x w x C told from N x C x h x w by one square image's shape (wrong where C == h)",
    ),
    Mutant(
        "construct/token_layout.py",
        "        wide = tuple(_embedding_output(model, embed, in_channels, (side, 2 * side)).shape)",
        "        wide = None",
        "no wider image measured: a map whose channels equal its side is refused as ambiguous",
    ),
    Mutant(
        "construct/token_layout.py",
        "    if shape[1] == shape[2] == shape[3]:",
        "    if False:",
        "a one-size map that reads both ways (C == h) guessed as N x h x w x C",
    ),
    Mutant(
        "nn/tokens.py",
        "                tokens = tokens.flatten(1, 2)",
        "                tokens = tokens.transpose(1, 2).flatten(1, 2)",
        "an N x h x w x C map flattened column-major (tokens misplaced off the square grid)",
    ),
    Mutant(
        "construct/token_layout.py",
        "    for missing in range(1, min(_MAX_MISSING_PREFIX, entries - 1) + 1):",
        "    for missing in range(2, min(_MAX_MISSING_PREFIX, entries - 1) + 1):",
        "a position embedding one entry (a class token) short of a grid gets no hint at tokens.prefix",
    ),
    Mutant(
        "construct/token_layout.py",
        "        elif missing == prefix_count:",
        "        elif missing != prefix_count:",
        "the hint blames tokens.prefix where tokens.position_covers_prefix: false is what is wrong",
    ),
    # torchrun's MASTER_PORT and ASCII digits; hand-made SyncBatchNorm off the GPU; wrapped state dicts as weights
    Mutant(
        "tasks/extract/ranks.py",
        '_INTEGER = re.compile(r"\\s*-?[0-9]+\\s*", re.ASCII)',
        '_INTEGER = re.compile(r"\\s*-?\\d+\\s*")',
        "RANK=\u0663 (an Arabic-Indic digit) taken as rank 3 by int()",
    ),
    Mutant(
        "tasks/extract/ranks.py",
        "    if port not in _PORTS:",
        "    if port is None:",
        "MASTER_PORT=99999: torch's ValueError without the variable's name; MASTER_PORT=0 leaves rank 1 waiting",
    ),
    Mutant(
        "nn/backbone.py",
        '        if self._spec.norm == "sync":\n            return SpecError(',
        "        if True:\n            return SpecError(",
        "SyncBatchNorm layers added with convert_sync_batchnorm on the CPU named as the spec's norm: sync",
    ),
    Mutant(
        "construct/weights.py",
        "    wrapped = _WRAPPER_PREFIX.match(unexpected[0]) if unexpected else None",
        "    wrapped = None",
        "a DDP- or torch.compile-wrapped backbone's state dict as weights: a bare key mismatch, no advice",
    ),
    Mutant(
        "construct/weights.py",
        "{' in '.join(reversed(wrappers))}",
        "{' in '.join(wrappers)}",
        "a compiled backbone in DDP (module._orig_mod.) named as DDP inside torch.compile",
    ),
    # Spec review (2026-12-07): overrides, spec files, one-line errors
    Mutant(
        "spec/overrides.py",
        "if isinstance(parent, ListConfig):",
        "if False:",
        "~out_features.0 deletes with OmegaConf's del: a raw TypeError (list indices must be integers)",
    ),
    Mutant(
        "spec/overrides.py",
        "                if key in seen:\n",
        "                if False:\n",
        "fpn={out_channels:8,out_channels:16} silently builds 16 channels (Hydra's parser keeps the last)",
    ),
    Mutant(
        "spec/yaml_file.py",
        "if error.errno in (errno.ENOENT, errno.ENOTDIR):",
        "if True:",
        "a spec path that cannot be looked up (a link loop, EACCES) reported as 'spec file not found'",
    ),
    Mutant(
        "spec/yaml_file.py",
        "named = shortened(origin) if error.errno == errno.ENAMETOOLONG else origin",
        "named = origin",
        "a spec file name too long for the system echoed whole in the error",
    ),
    Mutant(
        "errors.py",
        "super().__init__(_cut(printable(str(message))))",
        "super().__init__(_cut(str(message)))",
        "a line break or ESC in a file's name forges a line of a featx error (messages not escaped)",
    ),
    Mutant(
        "spec/yaml_file.py",
        '_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:bool", _true_or_false)\n',
        "",
        "modules: [conv1, yes] in a file builds the module path 'True', where an override reads 'yes'",
    ),
    Mutant(
        "spec/yaml_file.py",
        "if isinstance(key, bool):  # OmegaConf's",
        "if False:  # OmegaConf's",
        "a stage named true in a file: OmegaConf's 'Key True (bool) is incompatible with (str)'",
    ),
    Mutant(
        "spec/yaml_file.py",
        "if isinstance(error, yaml.reader.ReaderError):",
        "if False:",
        "a NUL byte in a spec file: 'not valid YAML: ReaderError', without the character or its place",
    ),
    Mutant(
        "spec/yaml_file.py",
        "column = index - (breaks[-1].end() if breaks else 0)",
        "column = index - (breaks[-1].start() if breaks else 0)",
        "a control character in a spec file named one column off after the first line",
    ),
    # App review (2026-12-07): the report's meta wording, featx-list columns and exit status
    Mutant(
        "cli/report.py",
        '        "forward - (meta device: structure only)"',
        '        "forward - (run=false: meta device, structure only)"',
        "featx backbone.device=meta (run left true) says the forward was skipped for run=false",
    ),
    Mutant(
        "cli/catalog.py",
        "    widths = _widths(names, [_model_of(sources[name]) for name in names])",
        "    widths = _WIDTHS",
        "featx-list: a name over 26 characters or a model over 20 (timm_swin_tiny's) pushes its row off the columns",
    ),
    Mutant(
        "cli/catalog.py",
        '        return "" if isinstance(source, FeatxError) else load_spec(source).model',
        '        return ""',
        "featx-list: a model name over 20 characters (timm:swin_tiny_patch4_window7_224) pushes its row off columns",
    ),
    Mutant(
        "cli/catalog.py",
        "    widths = _widths(models, models)",
        "    widths = _WIDTHS",
        "featx-list --timm: a model name over 26 characters pushes its row off the columns",
    ),
    Mutant(
        "cli/catalog.py",
        '            parser.exit(1, f"featx-list: error: --config-dir {root}: no backbone/ folder in it\\n")',
        '            parser.exit(2, f"featx-list: error: --config-dir {root}: no backbone/ folder in it\\n")',
        "featx-list --config-dir of a folder without backbone/ exits 2, the status of an unreadable command line",
    ),
    # Spec review (2026-12-07): composed references measured, missing stages, nn.ModuleDict names at load_spec
    Mutant(
        "spec/references.py",
        "    _Expansion().check(copy)\n",
        "",
        "a composed node's chain of ${...} references is unrolled by OmegaConf (10^n steps) before any size check",
    ),
    Mutant(
        "spec/references.py",
        "        frame[0] += resolutions\n",
        "        frame[0] += 1\n",
        "a reference through a node that is a chain of references counts once, not as the resolutions it unrolls",
    ),
    Mutant(
        "spec/references.py",
        "        if characters > MAX_SPEC_BYTES:\n",
        "        if False:\n",
        "references that concatenate megabytes of text into a spec value are resolved, not refused",
    ),
    Mutant(
        "spec/load.py",
        "        _refuse_missing_markers(literal)  # before the checks of form: ``stages: ???`` is missing, not a "
        "string\n        _check_nesting(literal)\n",
        "        _check_nesting(literal)\n        _refuse_missing_markers(literal)\n",
        "a BackboneSpec without stages is refused as 'expected a mapping of stage name ..., got str', not as missing",
    ),
    Mutant(
        "spec/validate.py",
        "        if name in MODULE_DICT_NAMES:\n",
        "        if False:\n",
        "load_spec passes a stage named training, keys or forward, which only featx.build refuses",
    ),
    Mutant(
        "spec/validate.py",
        " train training type ",
        " train type ",
        "load_spec passes a stage named training (missing from the names of nn.ModuleDict)",
    ),
    # The featx app's title on the meta device (2026-12-07)
    Mutant(
        "cli/main.py",
        'else "meta device" if spec.device == "meta" else None',
        "else None",
        "featx backbone.device=meta backbone.weights=IMAGENET1K_V1: the title says the weights as if loaded",
    ),
    # App review (2026-12-07): log files and the sweep's own job folders
    Mutant(
        "cli/output_folders.py",
        '        if ".." in Path(value).parts or Path(folder) not in path.parents:',
        '        if ".." in Path(value).parts:',
        "a log handler's file outside the run folder (absolute or relative): Hydra makes it or appends the run's log",
    ),
    Mutant(
        "cli/output_folders.py",
        '            if isinstance(settings, dict) and "filename" in settings:',
        '            if handler == "file" and isinstance(settings, dict) and "filename" in settings:',
        "a log handler of the user's own (not Hydra's file) writes outside the run folder, or empties a file there",
    ),
    Mutant(
        "cli/output_folders.py",
        "                if os.path.lexists(path) and not path.is_dir():",
        "                if False:",
        "a file where a sweep's job folder goes stops the sweep at that job (File exists)",
    ),
    Mutant(
        "cli/output_folders.py",
        '        arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)',
        "        arguments = list(config.hydra.overrides.task)",
        "a config's hydra.sweeper.params left out of the sweep's jobs: the folders of the jobs beyond are unchecked",
    ),
    Mutant(
        "cli/output_folders.py",
        "        for number in range(jobs or 0):",
        "        for number in range(max(jobs or 0, 8)):",
        "folders of jobs the sweep does not run are checked: a link to the user's data in the sweep folder is refused",
    ),
    Mutant(  # replaces the mutant of `entries = sorted(folder.iterdir()) ...`, whose code is gone
        "cli/output_folders.py",
        "            job = base.joinpath(*parts)\n",
        "            job = base / parts[0]\n",
        "a planted link in a job folder below a subfolder of the sweep folder",
    ),
    Mutant(
        "cli/output_folders.py",
        "                if path.is_symlink():",
        "                if False:",
        "a link where a sweep's job folder goes: the job writes its logs and config record through it",
    ),
    Mutant(
        "cli/output_folders.py",
        '        if sweeper.get("_target_") != _BASIC_SWEEPER:',
        "        if False:",
        "a sweeper whose jobs featx cannot list: its job folders go unchecked (an invalid one: Hydra's traceback)",
    ),
    # App review (2026-12-07): config files' sweeps, nullable nodes, Hydra's own errors, --hydra-help, YAML 1.1 words
    # 1: a config file's hydra.sweeper.params get the command line's checks
    Mutant(
        "cli/user_configs.py",
        "        if isinstance(sweeper, Mapping):\n            check_sweeper_file(",
        "        if False:\n            check_sweeper_file(",
        "a config's hydra.sweeper.params go unchecked: extract.overwrite: 2 there replaces a folder of features",
    ),
    Mutant(
        "cli/user_configs.py",
        "        if override.get_key_element() not in given:\n            swept.append((argument, override))",
        "        if True:\n            swept.append((argument, override))",
        "a config's sweep of a key the command line sets (whose value the sweeper never uses) is refused",
    ),
    # 5: swept values below backbone.fpn / backbone.tokens are checked before the sweep
    Mutant(
        "cli/override_checks.py",
        '        owner = _NULLABLE_SCHEMAS.get(".".join(parts[: depth + 1]), owner)\n',
        "",
        "backbone.fpn.out_channels=64,abc runs job #0 before job #1 fails",
    ),
    # 6: a sweep batch size below 1, and errors of Hydra's own code
    Mutant(
        "cli/sweeps.py",
        "    if number is None or number > 0:",
        "    if number is None or number >= 0:",
        "hydra.sweeper.max_batch_size=0 reaches Hydra's bare AssertionError",
    ),
    Mutant(
        "cli/hydra_errors.py",
        "    frames = traceback.extract_tb(error.__traceback__)[1:]",
        "    frames = traceback.extract_tb(error.__traceback__)",
        "an error of Hydra's own code (hydra.job_logging.root.level=NOPE) names no Hydra setting",
    ),
    Mutant(
        "cli/app.py",
        "        if settings and not isinstance(cause, OSError) and not raised_in_featx(error):",
        "        if settings and not isinstance(cause, OSError):",
        "an error of the app's own task is blamed on the Hydra settings given",
    ),
    # 7: what featx's reader refuses in a config file of the user's (run: off) is named with the file
    Mutant(
        "cli/user_configs.py",
        "        if found is not None and found not in seen:\n            _read_users_config(app, found)\n",
        "",
        "a primary config holding run: off is called one that does not start from the app's config",
    ),
    Mutant(
        "cli/user_configs.py",
        "        if _holds_nothing(path):\n            return {}\n",
        "",
        "a config file of comments only, which Hydra reads as empty, is refused",
    ),
    # 8: --hydra-help takes Hydra's settings only
    Mutant(
        "cli/hydra_settings.py",
        "    if flags.hydra_help and apps:",
        "    if False and apps:",
        "featx --hydra-help backbone=resnet18 answers with Hydra's advice to append +backbone=resnet18",
    ),
    # Cache review (2026-12-07): functions reached through modules, hub-file records keyed on ctime
    # the plan cache: functions a forward reaches through a module (F.max_pool2d), hub-file records keyed on ctime
    Mutant(
        "construct/model_structure.py",
        '                reached.setdefault(f"{path}.{name}", value)\n',
        "                pass\n",
        "an entry planned with a stride-1 F.max_pool2d used by unpatched builds (strides 2..8 for maps at 4..16)",
    ),
    Mutant(
        "construct/model_structure.py",
        '                modules.append((f"{path}.{name}", value))\n',
        "                pass\n",
        "a replaced torch.nn.functional.relu (reached through two modules) planned from the cache",
    ),
    Mutant(
        "construct/model_structure.py",
        "        return f\"builtin {getattr(value, '__module__', None)}.{value.__qualname__}\"\n",
        "        pass\n",
        "torch.flatten replaced by another builtin (torch.ravel) planned from the cache",
    ),
    Mutant(
        "construct/model_structure.py",
        "    return os.path.realpath(file) if os.path.isabs(file) else file\n",
        "    return os.path.realpath(file)\n",
        "a frozen module's code located in the working directory: a checkout run elsewhere never gets packaged plans",
    ),
    # re-targeted: the two mutants of model_structure.py whose text the fix changed
    Mutant(
        "construct/model_structure.py",
        "            locations[kind] = _class_code(kind, folders, described)",
        "            locations[kind] = _code_location(kind.forward, folders)",
        "a patched forward helper (ResNet._forward_impl) planned from the cache",
    ),
    Mutant(
        "construct/model_structure.py",
        "        if callable(value) and not isinstance(value, type):\n",
        '        if "." in name and callable(value) and not isinstance(value, type):\n',
        "swin_t's packaged plan (strides 4..32) used with a user's _patch_merging_pad (maps at strides 4..256)",
    ),
    Mutant(
        "file_records.py",
        '        "ctime_ns": status.st_ctime_ns,\n',
        "",
        "a verified hub file rewritten in place with its mtime put back (os.utime) used without a hash",
    ),
    # App review (2026-12-07): checks before Hydra (list items, keys twice, FIFOs, callback, Hydra's log files)
    Mutant(
        "cli/command_line.py",
        "    check_deleted_keys(app, overrides, schema)\n",
        "",
        "~ of a list's item reaches Hydra (TypeError)",
    ),
    Mutant(
        "cli/override_checks.py",
        'return ".".join(parents) if parents and typing.get_origin(_unwrapped(hint)) is list else None',
        'return ".".join(parents) if parents and typing.get_origin(hint) is list else None',
        "~ of an item of an Optional list (a stage's modules) reaches Hydra",
    ),
    Mutant(
        "cli/override_checks.py",
        "            duplicate = duplicated_key(as_typed(argument))\n",
        "            duplicate = None\n",
        "a command line mapping giving a key twice keeps the last value",
    ),
    Mutant(
        "cli/user_configs.py",
        "        duplicate = duplicated_key(argument)\n",
        "        duplicate = None\n",
        "a config file's sweep mapping giving a key twice keeps the last value",
    ),
    Mutant(
        "cli/user_configs.py",
        "return path.exists() and not path.is_dir()",
        "return path.is_file()",
        "a fifo in place of a user's config file is Hydra's 'Could not find'",
    ),
    Mutant(
        "cli/hydra_settings.py",
        "if replaced or _below(name, FEATX_CALLBACK):",
        "if replaced:",
        "~hydra.callbacks.output_folders removes the run folders' checks",
    ),
    Mutant(
        "cli/user_configs.py",
        '    if not group and "hydra" in content:\n',
        "    if False:\n",
        "a primary config's hydra.callbacks.output_folders: null removes the run folders' checks",
    ),
    Mutant(
        "cli/hydra_settings.py",
        'and (name.rpartition(".")[2] == "filename" or interpolated):',
        "and interpolated:",
        "a hydra.hydra_logging handler's file is opened (emptied) as Hydra composes",
    ),
    Mutant(
        "cli/hydra_settings.py",
        "return None if all(choice in HYDRA_LOGGING_CHOICES for choice in choices) else _LOG_FILE_REFUSED",
        "return None",
        "hydra/hydra_logging=<a file of the user's> opens its log file as Hydra composes",
    ),
    # App review (2026-12-07): a dropped Ctrl-C, a launcher Hydra cannot load, completion's own config folder
    Mutant(
        "cli/app.py",
        "            stop_if_interrupted()  # the sweep's later jobs are not run\n",
        "",
        "a Ctrl-C whose KeyboardInterrupt torch's import dropped lets a sweep's later jobs run",
    ),
    Mutant(
        "cli/interrupts.py",
        "        if not (isinstance(error, KeyboardInterrupt) or _interrupts):",
        "        if not isinstance(error, KeyboardInterrupt):",
        "an error raised after a dropped Ctrl-C (numpy's ImportError) is a traceback, not the interrupted line",
    ),
    Mutant(
        "cli/app.py",
        "    except (ValueError, TypeError, AttributeError, LookupError, AssertionError, RuntimeError) as error:",
        "    except (ValueError, TypeError, AttributeError, LookupError, AssertionError, RecursionError) as error:",
        "a launcher outside Hydra's plugins (hydra.launcher._target_=...) is Hydra's RuntimeError traceback",
    ),
    Mutant(
        "cli/command_line.py",
        "            check_command_line(app, completed, words, schema)",
        "            check_command_line(app, flags, words, schema)",
        "tab completion checks the line against the -sc call's folders: nothing offered with the line's --config-dir",
    ),
    Mutant(
        "cli/command_line.py",
        '                if equals and "." not in key and (leaves_config_roots(choice) or choice.startswith(".")):',
        "                if False:",
        "tab completion of backbone=../ lists the files of a folder outside the config roots",
    ),
    # Review of the session's diff (2026-12-07)
    Mutant(
        "cli/hydra_settings.py",
        '        replaced |= name == "hydra.callbacks" and (deleting or not isinstance(below, Mapping))',
        '        replaced |= name == "hydra.callbacks"',
        "a config file adding a callback beside featx's (hydra: {callbacks: {mine: ...}}) refused as removing featx's",
    ),
    Mutant(
        "spec/references.py",
        "RecursionError, LookupError, TypeError, ValueError):",
        "RecursionError):",
        "${l.x} of a list in a composed spec: the size measure's TypeError escapes as a raw traceback",
    ),
    # The review's fix of the size measure, mended (2026-12-07)
    Mutant(
        "spec/references.py",
        "        except SpecError:  # the refusal itself (a ValueError too)\n            raise\n",
        "",
        "the size measure's own refusal (a SpecError, so a ValueError) swallowed with Python's lookup errors",
    ),
    # Session of 2026-12-07 (fifth): review of featx.save/load and weights (reinit again, load's labels and hints)
    # fix 1: a featx.save file named as weights: of a spec re-initialising the stages its own spec re-initialised
    Mutant(
        "construct/builder.py",
        "    _check_reinit_again(spec, saved, checkpoint.path)\n",
        "",
        "build: a featx.save file as weights: of the spec it came from draws its trained reinit stages afresh again",
    ),
    Mutant(
        "construct/builder.py",
        "    shared = [name for name in spec.reinit if name in saved.reinit]",
        "    shared = list(spec.reinit)",
        "build: a stage only the new spec re-initialises (a new head) over a featx.save file is refused",
    ),
    # fix 2: featx.load of a Backbone's own state_dict()
    Mutant(
        "construct/builder.py",
        '        advice = hint or f"; build a spec with weights: {path} instead"',
        '        advice = f"; build a spec with weights: {path} instead"',
        "featx.load(torch.save(bb.state_dict())): advises weights: FILE, which the build refuses",
    ),
    Mutant(
        "construct/weights.py",
        'read = "safetensors.torch.load_file(path)" if origin.lower().endswith(".safetensors") else "torch.load(path)"',
        'read = "torch.load(path)"',
        "a .safetensors file of bb.state_dict() is told to be read with torch.load, which cannot read it",
    ),
    # replaces the mutant of scripts/mutation.py whose old text was "+ backbone_state_hint(unexpected)" (the call
    # now passes the file's path)
    Mutant(
        "construct/weights.py",
        '+ ("" if saved_by_featx else backbone_state_hint(unexpected, origin))',
        '+ ""',
        "a file of bb.state_dict() given as weights gets no hint how to load it",
    ),
    # fix 3: featx.load's errors after reading named as its path argument
    Mutant(
        "construct/builder.py",
        "    except WeightsError as error:  # the file's tensors, as read_checkpoint's errors above\n"
        "        raise _as_load_argument(error) from None\n",
        "",
        "featx.load of a file whose tensors do not fit: the error names backbone.weights, a key the caller never gave",
    ),
    # replaces the mutant of scripts/mutation.py whose old text was
    # '        raise type(error)(f"load(): path: {str(error).removeprefix(weights_key)}") from None' (now moved here)
    Mutant(
        "construct/builder.py",
        '    return type(error)(f"load(): path: {str(error).removeprefix(weights_key)}")',
        "    return error",
        "featx.load('missing.pt'): the error names backbone.weights, a key the caller never gave",
    ),
    # fix 4: a checkpoint's oversized spec is not called YAML
    Mutant(
        "construct/checkpoint.py",
        "        check_data_size(spec, shared=SHARED_CONTAINERS)",
        "        check_data_size(spec)",
        "featx.load of a .pt whose spec is too large: the size error speaks of YAML aliases",
    ),
    # fix 5: a .safetensors file whose name is not UTF-8
    Mutant(
        "construct/checkpoint.py",
        '            utf8_path(path, key_path("weights"))\n',
        "            pass\n",
        "featx.load of a .safetensors file named in another encoding: safetensors' error quotes the name with U+FFFD",
    ),
    Mutant(
        "spec/load.py",
        "        check_data_size(data, shared=SHARED_CONTAINERS)",
        "        check_data_size(data)",
        "the size bound of a spec given as a Python mapping speaks of YAML aliases",
    ),
    # Session of 2026-12-07 (fifth): review of featx-propose, detection docs, paths climbing out of new folders
    Mutant(
        "nn/backbone.py",
        "            self.freeze(*tuple(self.stages)[: spec.frozen_stages])",
        "            self.freeze(*tuple(self.stages)[: spec.frozen_stages + 1])",
        "frozen_stages=1 freezes c3 (layer2) too: fine-tuning trains less than torchvision's fasterrcnn_resnet50_fpn",
    ),
    Mutant(
        "construct/propose.py",
        "model_features, chain.irregular))",
        "model_features))",
        "featx-propose timm:mobilevitv2_050's header blames other shapes or fused maps, not stages.4's stride of no "
        "power of two",
    ),
    Mutant(
        "construct/proposal_yaml.py",
        '        why = proposal.chain_end or "it works',
        '        why = "it works',
        "a proposal ending at maps of no power-of-two stride gives the generic reason in its header",
    ),
    Mutant(
        "files.py",
        "    path = without_climbs_out_of_new_folders(shown)",
        "    path = shown",
        "featx-propose -o zz/../out.yaml makes the folder zz, which the file is not in, and leaves it",
    ),
    Mutant(
        "files.py",
        'parts[-1] != ".." and not os.path.lexists(Path(*parts)):',
        'parts[-1] != "..":',
        "link/../y.bin resolved lexically: the file lands beside the link, not beside its target, as the OS puts it",
    ),
    Mutant(
        "cli/propose.py",
        "        if self.dest in given:",
        "        if False:",
        "featx-propose --fpn 8 --fpn 16 silently takes the last value",
    ),
    Mutant(
        "cli/propose.py",
        '    if args.force and args.output in (None, "-"):',
        "    if args.force and args.output is None:",
        "featx-propose -o - --force ignores --force (the YAML goes to standard output)",
    ),
    Mutant(
        "cli/propose.py",
        "a higher value is refused, and --fpn's simple pyramid \"",
        'a higher value is refused "',
        "featx-propose --help does not say that a ViT's simple pyramid keeps p2..p5 whatever --min-stride is",
    ),
    # Session of 2026-12-07 (fifth): review of the export path (smaller sizes checked, hints, compile, ONNX names)
    # export: the check down to the largest stride, the retry hint, torch.compile, ONNX axis names, integral sizes
    Mutant(
        "tasks/export.py",
        "        for size in _smaller_sizes(backbone, example):\n",
        "        for size in _smaller_sizes(backbone, example)[:1]:\n",
        "a dynamic export wrong far below the traced size (Swin traced at 288, 9 % off at 224) written",
    ),
    Mutant(
        "tasks/export.py",
        "    return min(side, max(stride, side // 2 // stride * stride))",
        "    return min(side, max(stride, side // 2))",
        "the check's halved sizes not multiples of the largest stride (docs/export.md's list of sizes wrong)",
    ),
    Mutant(
        "tasks/export.py",
        '            if kind == "smaller" and format == "exported" and _unit_sides(expected):',
        '            if kind == "smaller" and _unit_sides(expected):',
        "a trace or ONNX file wrong where an output has a side of 1 written (only torch.export refuses that size)",
    ),
    Mutant(
        "tasks/export.py",
        '            retry = "Use"\n',
        '            retry = "Use format exported or onnx for other sizes, or" if format == "torchscript" else "Use"\n',
        "a trace refused at another size advises format exported or onnx, which keep the same branch (Swin)",
    ),
    Mutant(
        "tasks/export.py",
        "    while eval_frame is not None and isinstance(backbone, eval_frame.OptimizedModule):",
        "    while False:",
        "export_backbone(torch.compile(bb)) refused ('got OptimizedModule'), which docs/export.md says works",
    ),
    Mutant(
        "tasks/export.py",
        "    program.rename_axes(_axis_names(program))\n",
        "",
        "an ONNX file's dynamic axes named s77, s53, s0 rather than batch, height, width",
    ),
    Mutant(
        "tasks/export.py",
        "ONNX_OPSET = 20",
        "ONNX_OPSET = 21",
        "an ONNX file of another opset than the documented 20",
    ),
    Mutant(
        "tasks/export.py",
        "    batch_size, example_size = _int(batch_size), (_int(example_size[0]), _int(example_size[1]))\n",
        "",
        "numpy's integers refused as a batch size or size ('must be an integer in 1..4096, got np.int64(2)')",
    ),
    Mutant(
        "tasks/export.py",
        "isinstance(value, numbers.Integral) and not isinstance(value, bool)",
        "isinstance(value, numbers.Integral)",
        "batch_size=True taken as a batch of 1",
    ),
    Mutant(
        "tasks/export.py",
        "    if not isinstance(keys, ExportKeys):\n",
        "    if False:\n",
        "a keys argument that is no ExportKeys: a raw AttributeError ('str' object has no attribute 'path')",
    ),
    # replacing scripts/mutation.py's three export mutants whose old text is gone (its lines 962, 2932 and 2938: the
    # last one is the retry-hint mutant above)
    Mutant(
        "tasks/export.py",
        '        inputs.append((_other_size(backbone, example, generator), "larger"))\n',
        "        pass\n",
        "a dynamic export that keeps its example's size accepted at larger sizes",
    ),
    Mutant(
        "tasks/export.py",
        "    sizes = [(height - stride, width - stride)] if min(height, width) > stride else []\n",
        "    sizes = []\n",
        "a dynamic export wrong just below the traced size (Swin's trace at 256, wrong at 224) checked only at half",
    ),
    # Session of 2026-12-07 (fifth): review of the timm integration (deprecated names, hub cache refs, wording)
    Mutant(
        "models/timm_models.py",
        '    if advice is not None:\n        raise SpecError(key_path("model"), advice)\n',
        "",
        "timm's deprecated names (ssl_resnet18) taken, said to have no weights and probed at the wrong size",
    ),
    Mutant(
        "models/timm_models.py",
        '    architecture, _, tag = current.partition(".")',
        '    architecture, tag = current, ""',
        "a deprecated timm name's advice names the architecture.tag as a model and leaves out its weights tag",
    ),
    Mutant(
        "models/timm_weights.py",
        "    return _unreferenced_snapshot(cache) or (",
        "    return (",
        "a cached snapshot refs/main does not name is told to be placed in the folder it is in",
    ),
    Mutant(
        "models/timm_weights.py",
        '        f"hf download {repo} {_HUB_FILES[0]}; HF_HUB_CACHE moves the cache)"',
        '        f"huggingface-cli download {repo} {_HUB_FILES[0]}; HF_HUB_CACHE moves the cache)"',
        "the offline error suggests huggingface-cli, which huggingface_hub 1.x no longer installs",
    ),
    Mutant(
        "models/timm_models.py",
        "    if tag and is_model(architecture):",
        "    if tag and is_model(architecture) and tag in pretrained_tags(architecture):",
        "timm:resnet18.bogus is an unknown model, not a tag resnet18 lacks, and its tags are not listed",
    ),
    Mutant(
        "cli/catalog.py",
        '    return f"no timm model matches {shortened(pattern)}{suggest(bare, names)}"',
        '    return f"no timm model matches {shortened(pattern)}"',
        "featx-list --timm resnt18 suggests no timm name",
    ),
    Mutant(
        "cli/catalog.py",
        "    if dot and any(fnmatch.fnmatchcase(name, architecture) for name in names):",
        "    if False:",
        "featx-list --timm resnet18.a1_in1k does not say that patterns match model names, not tags",
    ),
    Mutant(
        "models/timm_models.py",
        'f"timm publishes no pretrained weights for {name} (valid: null; {_LOCAL_FILE})"',
        'f"timm publishes no pretrained weights for {name} (valid: null)"',
        "weights: DEFAULT of a model without published weights does not offer a local file",
    ),
    # contract review (session of 2026-12-07, sixth)
    # contract review: docs/detection.md's four maps '0'..'3' need an anchor generator of four sizes
    Mutant(
        "tasks/detection.py",
        "    return AnchorGenerator(sizes, (ratios,) * len(sizes))",
        "    return AnchorGenerator((*sizes, sizes[-1]), (ratios,) * (len(sizes) + 1))",
        "anchor_generator(bb) on a packaged _fpn file's four maps '0'..'3' has five sizes, as torchvision's default: "
        "the detector fails at its first forward with torchvision's AssertionError",
    ),
    # contract review: a negative slice end named as such
    Mutant(
        "spec/validate.py",
        "    if end < 0:\n",
        "    if False:\n",
        "slice: [0, -1] refused as '[0, -1] is empty' (it is not, in Python), the negative end not named",
    ),
    # contract review: null for a key of fixed choices names the choices
    Mutant(
        "spec/load.py",
        "            refusal = null_refusal((*parents, key), hint) if key in node and value is None else None\n",
        "            refusal = None\n",
        "norm=null in featx.build: OmegaConf's \"Incompatible value 'None' for field of type 'str'\", no choices named",
    ),
    Mutant(
        "cli/override_checks.py",
        '        spec_key = parts[1:] if parts[0] == "backbone" else parts\n',
        "        spec_key = parts\n",
        "featx backbone.norm=null: OmegaConf's \"field 'norm' is not Optional\", no choices named",
    ),
    # fuzz review (session of 2026-12-07, sixth)
    # fuzz review: device strings torch refuses, absurdly long integers, null for keys without choices, source
    # without a slice stage
    Mutant(
        "spec/validate.py",
        "cuda(:(0|[1-9][0-9]{0,3}))?",
        "cuda(:\\d{1,4})?",
        "cuda:01 and cuda:\\u0663 pass the spec's check: torch.device's raw RuntimeError 'Invalid device string'",
    ),
    Mutant(
        "spec/limits.py",
        "    check_integers(data)\n",
        "",
        "a 5000-digit integer in a mapping reaches OmegaConf (raw ValueError 'Exceeds the limit (4300 digits)')",
    ),
    Mutant(
        "spec/limits.py",
        "    if _too_long_for_text(value):\n",
        "    if False:\n",
        "quoted() runs repr() on a 5000-digit integer: raw ValueError",
    ),
    Mutant(
        "spec/yaml_file.py",
        "and len(digits) > MAX_INT_DIGITS:",
        "and len(digits) > 10**6:",
        "a 5000-digit integer in a spec file reaches PyYAML's int(): raw ValueError",
    ),
    Mutant(
        "spec/load.py",
        "        check_integers(literal)  # an override's",
        "        pass  # an override's",
        "seed=<4000 digits> from an override is printed whole in the range message",
    ),
    Mutant(
        "spec/load.py",
        '    takes = _TAKES.get(".".join(parts)) or _KINDS.get(typing.get_origin(hint) or hint)\n',
        "    takes = None\n",
        "model=null, seed=null, reinit=null: OmegaConf's 'Incompatible value' / 'is not Optional', nothing said taken",
    ),
    Mutant(
        "spec/load.py",
        "                if item is None:  # OmegaConf's",
        "                if False:  # OmegaConf's",
        "out_features=[null]: OmegaConf's 'Invalid type assigned: NoneType is not a subclass of str'",
    ),
    Mutant(
        "cli/override_checks.py",
        "hints[parts[-1]]) if value is None else None\n",
        'hints[parts[-1]]) if value is None and parts[0] == "backbone" else None\n',
        "featx input.batch_size=null: OmegaConf's \"field 'batch_size' is not Optional\"",
    ),
    Mutant(
        "cli/override_checks.py",
        "        if isinstance(value, list) and item_type is not None and None in value:",
        "        if False:",
        "featx backbone.out_features=[null]: OmegaConf's 'Invalid type assigned', the item not named",
    ),
    Mutant(
        "spec/validate.py",
        "if spec.source is not None and all(stage.slice is None for stage in spec.stages.values()):",
        "if False:",
        "source=fc with modules-only stages accepted and silently ignored",
    ),
    # fuzz review: the batch limit names backbone.input_size where the size came from it
    Mutant(
        "cli/app.py",
        'f"{where}.{side}" if given is not None or fixed is None else "backbone.input_size"',
        'f"{where}.{side}"',
        "featx backbone.input_size=[16384,16384]: the batch limit says to lower input.height/width, which are unset",
    ),
    # downstream Hydra review (session of 2026-12-07, sixth)
    Mutant(
        "cli/user_configs.py",
        'f"working directory){_own_backbone_advice(seen[-1], own)}",',
        '"working directory)",',
        "a dumped config's refusal advises config first, which merges the dump into config's backbone choice",
    ),
    Mutant(
        "spec/references.py",
        '"resolved: featx.build(OmegaConf.to_container(cfg.backbone, resolve=True))",',
        '"resolved",',
        "a resolver reached from the user's own config: no word of building it resolved",
    ),
    Mutant(
        "spec/load.py",
        '    if message.startswith("Recursive interpolation detected"):',
        "    if False:",
        "a node saved unresolved and loaded again: OmegaConf's bare 'Recursive interpolation detected'",
    ),
    # Checkpoints that passed the tensor record check, remembered by identity (issue #17)
    Mutant(
        "construct/checked_checkpoints.py",
        "        return recalled_facts(self._folder, self._path, self._status) == _facts()",
        "        return recalled_facts(self._folder, self._path, self._status) is not None",
        "a pass recorded by another featx or torch version is taken without a walk",
    ),
    Mutant(
        "construct/checked_checkpoints.py",
        "        if same_file(self._status, now):\n",
        "        if True:\n",
        "a checkpoint replaced while it was checked is recorded under the verdict of the file read",
    ),
    Mutant(
        "construct/weights.py",
        "        if remembered.passed:\n            return True\n",
        "",
        "a checkpoint that passed the record check is walked again at every build",
    ),
    Mutant(
        "construct/weights.py",
        "    remembered.remember_pass()\n    return True",
        "    return True",
        "a checkpoint that passed the record check is never remembered",
    ),
    Mutant(
        "construct/weights.py",
        "    if mismatch is not None:\n        raise UnreadableWeightsError(",
        "    remembered.remember_pass()\n    if mismatch is not None:\n        raise UnreadableWeightsError(",
        "a checkpoint whose records do not hold what its pickle claims is remembered as checked",
    ),
    # Forward: layers left on meta or in another dtype by hand (review 2026-12-07 seventh)
    Mutant(
        "nn/backbone.py",
        '        if device_type != "meta" and (meta := first_meta_tensor(self)) is not None:',
        '        if device_type != "meta" and (meta := first_meta_tensor(self.stages)) is not None:',
        "a layer of the neck left on meta (its state dict loaded without the extra levels) returns uninitialised maps",
    ),
    Mutant(
        "nn/tensor_places.py",
        "        if child is not None and _holds_meta(child, seen):",
        "        if False:",
        "a layer moved to meta inside a stage is not seen: the forward returns uninitialised memory",
    ),
    Mutant(
        "nn/backbone.py",
        "            if mix is not None:\n",
        "            if False:\n",
        "a stage or neck left in half precision by hand fails with torch's raw RuntimeError",
    ),
    Mutant(
        "nn/tensor_places.py",
        "(tensor.dtype != reference.dtype or tensor.device != reference.device)",
        "(tensor.device != reference.device)",
        "a stage left in another dtype than its input is not named (torch's raw RuntimeError)",
    ),
    # featx-list: user files composed as the app does, --timm with --config-dir, singular count (review 2026-12-07)
    Mutant(
        "cli/catalog.py",
        "        sources.update(composed_backbones(users, roots))",
        "        pass",
        "featx-list reads a user's file on its own again: one that extends another is an error row",
    ),
    Mutant(
        "cli/user_backbones.py",
        '        raise FeatxError(str(refusal.code).removeprefix(f"{_APP}: error: ")) from None',
        "        raise FeatxError(str(refusal.code)) from None",
        "featx-list's row of a file the app's checks refuse says 'featx-list: error:' inside the row",
    ),
    Mutant(
        "cli/user_backbones.py",
        "    except (ValueError, TypeError, AttributeError, LookupError, AssertionError, RuntimeError) as error:",
        "    except (TypeError, AttributeError, LookupError, AssertionError, RuntimeError) as error:",
        "featx-list ends on a traceback where Hydra's code raises a ValueError (defaults: 5)",
    ),
    Mutant(
        "cli/catalog.py",
        "        if args.config_dir:",
        "        if False:",
        "featx-list --timm ignores --config-dir silently",
    ),
    Mutant(
        "cli/catalog.py",
        "f\"{len(models)} timm model{'' if len(models) == 1 else 's'}\"",
        'f"{len(models)} timm models"',
        "featx-list --timm counts '1 timm models'",
    ),
    # roi_pooler's advice by what its levels lack (docs review 2026-12-07)
    Mutant(
        "nn/neck_levels.py",
        '    if len(set(strides)) < len(strides):\n        return "return one of them',
        '    if False:\n        return "return one of them',
        "roi_pooler on two ViT blocks of one stride advises returning consecutive stages, which cannot help",
    ),
    # featx-extract folders: settings digest per shard, manifest length, bounded lines, records checked once
    Mutant(
        "tasks/extract/store.py",
        "                    _check_settings_digest(record, digest, shard, OUTPUT_KEY)\n",
        "",
        "a run resumes under a settings file edited by hand, adding another network's features to the folder",
    ),
    Mutant(
        "tasks/extract/store.py",
        "        _check_settings_digest(record, digest, shard, who)\n",
        "",
        "read_features reads shards made with other settings than the settings file records",
    ),
    Mutant(
        "tasks/extract/store.py",
        "lines.readline(_MAX_RECORD_BYTES + 1)",
        "lines.readline()",
        "a huge manifest line (a sparse file) is read whole before its length is checked",
    ),
    Mutant(
        "tasks/extract/store.py",
        "        if known is None or known[0] != text:  # a file replaced since is checked anew\n",
        "        if True:\n",
        "read_features parses and checks a shard's whole record again each time it reopens the shard",
    ),
    Mutant(
        "tasks/extract/store.py",
        "        if known is None or known[0] != text:  # a file replaced since is checked anew\n",
        "        if known is None:\n",
        "a shard replaced after its record was checked is read with the record checked before",
    ),
    Mutant(
        "tasks/extract/store.py",
        "    if count < recorded:\n",
        "    if False:\n",
        "a manifest cut short (or emptied) reads back as fewer rows without an error",
    ),
    Mutant(
        "tasks/extract/store.py",
        "            if count > recorded:\n",
        "            if False:\n",
        "a manifest lengthened past the entries the settings file records is read",
    ),
    Mutant(
        "tasks/extract/store.py",
        '    try:\n        opened = manifest.open("rb")\n    except OSError as error:',
        '    try:\n        opened = manifest.open("rb")\n    except NotADirectoryError as error:',
        "read_features of a folder whose manifest a run removed after the call ends on a raw FileNotFoundError",
    ),
    # Review of the session's diff: the remembered check's status taken before the file is opened
    Mutant(
        "construct/weights.py",
        "        mismatch = record_mismatch(reader)\n",
        "        mismatch = record_mismatch(reader)\n        remembered = RememberedCheck(path)\n",
        "a checkpoint's status is taken after its walk: a forged file put there meanwhile is recorded as checked",
    ),
    # CI: torchrun's ranks sharing one hydra.run.dir
    Mutant(
        "cli/output_folders.py",
        "        if _torchrun_rank() > 0:",
        "        if False:",
        "torchrun's rank 1 takes rank 0's half-written .hydra record for a stranger's file and stops the launch",
    ),
    # featx-list's quoting of a user's folder and file names for Hydra's override grammar
    Mutant(
        "cli/user_backbones.py",
        "    escaped = re.sub(",
        "    escaped = text or re.sub(",
        "featx-list passes a user's folder and file names to Hydra unescaped: a quote ends the value early",
    ),
    Mutant(
        "cli/user_backbones.py",
        "found.group(1) * 2 + (",
        "found.group(1) + (",
        "featx-list escapes quotes but not the backslashes before a quote or at the end of a name",
    ),
    # review of concurrency: a reader meeting a run's work in progress
    Mutant(
        "construct/weights.py",
        "    except RuntimeError as error:  # torch's second open of the file by its name",
        "    except ZeroDivisionError as error:  # torch's second open of the file by its name",
        "a safetensors file removed between safetensors' open and torch's ends on torch's raw RuntimeError",
    ),
    Mutant(
        "tasks/extract/store.py",
        "    if record is None and os.path.lexists(root / SHARD_DIR):",
        "    if False:",
        "a folder whose overwrite run is making its features anew is called not a featx-extract output folder",
    ),
    Mutant(
        "files.py",
        '        namespace = os.readlink("/proc/self/ns/pid")',
        '        namespace = ""',
        "a write in another PID namespace on this host takes a running writer for a killed one and removes its file",
    ),
    Mutant(
        "cli/output_folders.py",
        '        hold_start_lock()\n        self._check("hydra.run.dir", config.hydra.run.dir)',
        '        self._check("hydra.run.dir", config.hydra.run.dir)',
        "two apps started at once in one run folder: one refuses the other's half-written record as a stranger's",
    ),
    Mutant(
        "cli/output_folders.py",
        "        hold_start_lock()\n        self._check_sweep_size(config)",
        "        self._check_sweep_size(config)",
        "two sweeps started at once in one sweep folder: one refuses the other's half-written job record",
    ),
    Mutant(
        "cli/output_folders.py",
        "            if time.monotonic() > deadline:",
        "            if True:",
        "an app finding the start lock held goes on at once instead of waiting for it",
    ),
    Mutant(
        "cli/output_folders.py",
        "        release_start_lock()  # Hydra has written",
        "        pass  # Hydra has written",
        "an app holds the start lock through its whole job: every other app waits 30 s",
    ),
    Mutant(
        "cli/app.py",
        "        release_start_lock()  # a run stopped",
        "        pass  # a run stopped",
        "a run refused in its folder check keeps the start lock: the next app waits 30 s",
    ),
    Mutant(
        "construct/plan.py",
        "        _check_torchvision_levels(plan.returned(spec))",
        "        pass",
        "output_names: torchvision with a stage skipped: the R-CNNs' default pooler pools some boxes as zeros",
    ),
    Mutant(
        "models/timm_models.py",
        "suggest(name, timm_models(), prefix=TIMM_PREFIX)",
        "suggest(name, timm_models())",
        "an unknown timm model's suggestions drop the timm: prefix (written as given, torchvision's models)",
    ),
    Mutant(
        "models/timm_models.py",
        "        known = name in timm_models()",
        "        known = False",
        "a timm model's name given without timm: gets torchvision's close names alone",
    ),
    Mutant(
        "files.py",
        "        if folder.is_symlink():\n            target = _link_target(folder)",
        "        if False:\n            target = _link_target(folder)",
        "an output folder that is a link to nothing is called a file in the way",
    ),
    Mutant(
        "construct/propose.py",
        "            if completed:  # its forward runs at its own size",
        "            if False:  # its forward runs at its own size",
        "a one-size model's layer its forward never calls is proposed in a stage, and the model refused",
    ),
    Mutant(
        "construct/builder.py",
        "        return _assemble(spec, checkpoint, saved)  # the file's spec, parsed above",
        '        return _assemble(spec, None if resolve_device(spec.device).type == "meta" else checkpoint, saved)',
        "featx.load on the meta device describes a backbone of overrides the file cannot give",
    ),
    Mutant(
        "construct/checkpoint.py",
        "    if differing:  # before out_features",
        "    if differing and saved.returned_stages == spec.returned_stages:  # before out_features",
        "another FPN style over a file's FPN is refused naming out_features, after being told to set them",
    ),
    Mutant(
        "construct/checkpoint.py",
        "str(checkpoint.path), saved_by_featx=True)",
        "str(checkpoint.path), saved_by_featx=False)",
        "a featx.save file that does not fit is told to load as it was (bb.load_state_dict, featx.load)",
    ),
]


def _apply(mutant: Mutant) -> Tuple[Path, str]:
    path = ROOT / "featx" / mutant.module
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(
            f"mutation.py: {mutant.module}: the text to mutate occurs {text.count(mutant.old)} times: {mutant.old!r}"
        )
    mutated = text.replace(mutant.old, mutant.new)
    compile(mutated, str(path), "exec")  # a mutant that does not compile would be "killed" by any import
    path.write_text(mutated)
    return path, text


def run(mutant: Mutant, workers: int) -> Tuple[str, float, str]:
    """('killed' | 'survived', seconds, the first failing test or '')."""
    path, original = _apply(mutant)
    start = time.perf_counter()
    try:
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        command += [] if mutant.module in RUN_SLOW else ["-m", "not slow"]
        command += ["-n", str(workers), "--dist", "load", *GUARDS[mutant.module]]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    finally:
        path.write_text(original)
    failed = next(
        (
            line.split(" ", 1)[1].split(" - ", 1)[0]
            for line in result.stdout.splitlines()
            if line.startswith(("FAILED ", "ERROR "))
        ),
        "",
    )
    status = "killed" if result.returncode != 0 else "survived"
    return status, time.perf_counter() - start, failed


#: the keys of one mutant's record in the ``--json`` file
RESULT_KEYS = {"module", "bug", "status", "seconds", "killed_by", "equivalent"}


def is_results_file(path: Path) -> bool:
    """Whether ``path`` is a regular file holding per-mutant results as this script writes them (a JSON list of its
    records): what ``--json`` may replace; anything else there is the user's."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return False
    return isinstance(data, list) and all(isinstance(record, dict) and set(record) == RESULT_KEYS for record in data)


def _write_results(path: Path, results: List[Dict[str, object]]) -> None:
    text = json.dumps(results, indent=1)
    write_atomically(path, lambda partial: partial.write_text(text), overwrite=True, what="--json")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="module names (e.g. freezing store) whose mutants run")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per mutant")
    parser.add_argument("--json", type=Path, help="write the per-mutant results here")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"argument --workers: {args.workers} is not a whole number >= 1")
    if args.json is not None and (args.json.exists() or args.json.is_symlink()) and not is_results_file(args.json):
        parser.error(
            f"argument --json: {args.json} exists and is not a results file this script wrote; nothing was run: "
            "give another path, or move that file"
        )
    chosen = [m for m in MUTANTS if not args.only or any(name in m.module for name in args.only)]
    if not chosen:
        modules = ", ".join(sorted({m.module for m in MUTANTS}))
        parser.error(f"argument --only: no mutant's module contains {' or '.join(args.only)} (modules: {modules})")
    rows, results = [], []
    for index, mutant in enumerate(chosen, 1):
        if mutant.equivalent:
            status, seconds, failed = "equivalent", 0.0, ""
        else:
            status, seconds, failed = run(mutant, args.workers)
        print(
            f"[{index}/{len(chosen)}] {status:10} {mutant.module}: {mutant.bug} ({seconds:.0f} s) {failed}",
            file=sys.stderr,
        )
        results.append(
            {
                "module": mutant.module,
                "bug": mutant.bug,
                "status": status,
                "seconds": round(seconds, 1),
                "killed_by": failed,
                "equivalent": mutant.equivalent,
            }
        )
        rows.append((mutant.module, mutant.bug, status, failed or (mutant.equivalent or "")))
        if args.json:  # after every mutant: a run stopped midway keeps what it found
            _write_results(args.json, results)
    counts = Counter((module, status) for module, _, status, _ in rows)
    print("| module | killed | survived | equivalent |\n|---|---:|---:|---:|")
    for module in dict.fromkeys(module for module, *_ in rows):
        killed, survived, equivalent = (counts[module, status] for status in ("killed", "survived", "equivalent"))
        print(f"| `{module}` | {killed} | {survived} | {equivalent} |")
    print("\n| module | planted bug | result | first failing test (or why equivalent) |\n|---|---|---|---|")
    for module, bug, status, detail in rows:
        print(f"| `{module}` | {bug} | {status} | {detail.replace('|', '/')} |")


if __name__ == "__main__":
    main()
