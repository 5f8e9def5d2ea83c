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
from typing import List, Optional

from featx.cli.output import reader_may_stop, status_line
from featx.errors import FeatxError
from featx.files import file_path_argument, printable_path, write_atomically
from featx.version import __version__


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
        "-o", "--output", help="write the YAML here instead of printing it (-: standard output; ./- a file named -)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --output file")
    parser.add_argument("--version", action="version", version=f"featx-propose {__version__}")
    parser.add_argument("--fpn", type=int, metavar="CHANNELS", help="add an FPN neck of this width")
    parser.add_argument("--min-stride", type=int, default=4, help="the shallowest stage's stride (default 4)")
    parser.add_argument("--frozen-stages", type=int, default=1, help="how many stages to freeze (default 1)")
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point."""
    parser = _parser()
    with reader_may_stop("featx-propose"):  # --help's text
        args = parser.parse_args(argv)
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
