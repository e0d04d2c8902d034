"""The `fastsde` command: train, sample, likelihood, eval, stats, inpaint, colorize, interpolate,
train-classifier, convert, merge, configs, bench, info.

One module per command, each with add(sub), which declares its arguments, and run(args). With no
--ckpt, the commands that take a model use the embedded default one. Launched with torchrun, `train`
runs data-parallel and `sample` shards the samples over the processes. Errors print as one line
unless --debug.
"""

import argparse
import sys

from . import (
    bench,
    colorize,
    configs,
    convert,
    eval,
    info,
    inpaint,
    interpolate,
    likelihood,
    merge,
    sample,
    stats,
    train,
    train_classifier,
)

COMMANDS = (
    train,
    sample,
    inpaint,
    colorize,
    interpolate,
    train_classifier,
    merge,
    likelihood,
    eval,
    stats,
    convert,
    configs,
    bench,
    info,
)


def parser():
    p = argparse.ArgumentParser(prog="fastsde", description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        code = args.run(args)
    except KeyboardInterrupt:
        print("\nfastsde: interrupted", file=sys.stderr)  # after a progress line, on a line of its own
        return 130
    except Exception as e:  # one clear line for users; --debug for the traceback
        if args.debug:
            raise
        print(
            f"fastsde {args.command}: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
            file=sys.stderr,
        )
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
