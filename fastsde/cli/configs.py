"""`fastsde configs`: list the built-in configs, or show one."""

import json


def add(sub):
    q = sub.add_parser("configs", help="list the built-in configs, or show one as JSON")
    q.add_argument("name", nargs="?")
    q.set_defaults(run=run)


def run(args):
    from .. import configs

    if args.name:
        print(json.dumps(configs.load(args.name), indent=2))
    else:
        print("\n".join(configs.names()))
