"""``featx-propose MODEL``: print (or write) a commented backbone spec for a torchvision classifier or a timm model.

Examples::

    featx-propose convnext_tiny                         # YAML on stdout
    featx-propose regnet_y_800mf --fpn 256 -o my_configs/backbone/regnet_fpn.yaml
    featx-propose resnet50 --min-stride 2               # also a stride-2 stage (c1)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any, List, Optional, Sequence, Union

from featx.cli.output import reader_may_stop, status_line
from featx.errors import FeatxError
from featx.files import file_path_argument, printable_path, write_atomically
from featx.version import __version__


class _Once(argparse.Action):
    """Store an option's value (``True`` for a flag, ``nargs=0``), refusing the option given again: argparse would
    keep the last value silently (``--fpn 8 --fpn 16``), as featx's Hydra apps refuse a key given twice."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Union[str, Sequence[Any], None],
        option_string: Optional[str] = None,
    ) -> None:
        given = vars(namespace).setdefault("given_options", set())
        if self.dest in given:
            parser.exit(
                2, f"{parser.prog}: error: {'/'.join(self.option_strings)} is given twice; give each option once\n"
            )
        given.add(self.dest)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featx-propose",
        description="Probe a torchvision classifier (or timm:NAME) on the meta device and write a backbone spec "
        "with one stage per stride (c2 = stride 4 ... c5 = stride 32).",
    )
    parser.add_argument(
        "model",
        help="a torchvision classification model, e.g. resnet50 (torchvision.models.list_models()), or timm:NAME",
    )
    parser.add_argument(
        "-o",
        "--output",
        action=_Once,
        help="write the YAML here instead of printing it (-: standard output; ./- a file named -)",
    )
    parser.add_argument(
        "--force", action=_Once, nargs=0, default=False, help="replace an existing --output file (needs -o FILE)"
    )
    parser.add_argument("--version", action="version", version=f"featx-propose {__version__}")
    parser.add_argument("--fpn", action=_Once, type=int, metavar="CHANNELS", help="add an FPN neck of this width")
    parser.add_argument(
        "--min-stride",
        action=_Once,
        type=int,
        default=4,
        help="the shallowest stage's stride (default 4). A token model's (plain ViT's) stages all have its patch "
        "stride (with --fpn the power of two at or above it): a higher value is refused, and --fpn's simple pyramid "
        "has p2..p5 (strides 4..32) whatever the value",
    )
    parser.add_argument(
        "--frozen-stages", action=_Once, type=int, default=1, help="how many stages to freeze (default 1)"
    )
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point."""
    parser = _parser()
    with reader_may_stop("featx-propose"):  # --help's text
        args = parser.parse_args(argv)
    if args.force and args.output in (None, "-"):
        parser.exit(
            2,
            "featx-propose: error: --force replaces an existing -o/--output file, but the YAML goes to standard "
            "output (no -o FILE): give -o FILE, or leave --force out\n",
        )
    # torch and torchvision: imported for a proposal only (not --help, not a refused command line)
    from featx.construct.proposal_yaml import proposal_yaml
    from featx.construct.propose import analyse

    command = shlex.join(["featx-propose", *(sys.argv[1:] if argv is None else argv)])
    try:
        proposal = analyse(
            args.model, min_stride=args.min_stride, fpn=args.fpn, frozen_stages=args.frozen_stages, options=True
        )
        text = proposal_yaml(proposal, command=command)
        if args.output is None or args.output == "-":
            with reader_may_stop("featx-propose"):
                sys.stdout.write(text)
        else:
            write_atomically(
                file_path_argument(args.output, "--output"),
                lambda p: p.write_text(text, encoding="utf-8"),
                overwrite=args.force,
                what="--output",
                hint="pass --force to replace it",
            )
            status_line(f"featx-propose: wrote {printable_path(args.output)}")
    except FeatxError as error:  # the message may quote --output as given: an ESC or newline in it is shown escaped
        parser.exit(1, f"featx-propose: error: {printable_path(str(error))}\n")


if __name__ == "__main__":
    main()
