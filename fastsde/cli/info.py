"""`fastsde info`: what was built, and which kernel backends run here."""


def add(sub):
    q = sub.add_parser("info", help="what was built and which kernel backends are available")
    q.set_defaults(run=run)


def run(args):
    from ..info import report

    print("\n".join(report()))
