"""Write featx/plans/: the plan of every packaged backbone spec, made fresh on the meta device (never read from a
cache), as plan-cache entries for the installed featx (its version and planning code), torch, torchvision and timm.
Builds of a packaged spec then skip planning. tests/test_plan_cache.py checks the folder against fresh plans; rerun
this after a version change, a change to featx's planning code (PLANNING_MODULES) or to a packaged spec:

    python scripts/make_plans.py
"""

from __future__ import annotations

from featx.construct.meta_model import MetaModel
from featx.construct.model_structure import structure_fingerprint
from featx.construct.plan import plan_backbone
from featx.construct.plan_cache import PACKAGED_PLANS, plan_versions, write_entry
from featx.spec.config_files import backbone_names
from featx.spec.load import load_spec


def main() -> None:
    PACKAGED_PLANS.mkdir(exist_ok=True)
    written = set()
    for name in backbone_names():
        spec = load_spec(name)
        versions = plan_versions(spec.model)
        if versions is None:
            raise SystemExit("make_plans.py: featx has no package metadata: pip install -e . first")
        model = MetaModel.create(spec.model).model
        structure = structure_fingerprint(model)  # before planning, as a build takes it
        written.add(write_entry(PACKAGED_PLANS, spec, plan_backbone(spec, model), versions, structure))
    stale = [path for path in PACKAGED_PLANS.glob("*.json") if path not in written]
    for path in stale:  # entries of older versions or of specs since changed: this folder is generated
        path.unlink()
    print(f"{len(written)} plans in {PACKAGED_PLANS} ({len(stale)} stale ones removed)")


if __name__ == "__main__":
    main()
