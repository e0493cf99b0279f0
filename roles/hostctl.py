"""Host-side command line the control machine calls over SSH: ``python3 -m roles.hostctl CMD``.

Every subcommand prints exactly one JSON object on stdout in the shape of ``roles.answer``
(``changed``, ``failed``, ``msg``, ``data``) and exits 0, or 1 when it failed. Every command
that changes state takes ``--check`` (say what would change, change nothing). Subcommands live
in small modules (``roles.netops`` for network facts and fixes, ``roles.procs`` for starting
and stopping roles, ``roles.deployctl`` for deploy's update and checks); this file only
dispatches. Nothing heavy (bcc, pyroute2) is imported before a command needs it.
"""

import argparse
import json
import sys


def main(argv=None):
    from roles import answer, deployctl, netops, procs

    parser = argparse.ArgumentParser(prog="roles.hostctl", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for module in (netops, procs, deployctl):
        module.register(sub)
    args = parser.parse_args(argv)
    try:
        result = answer.shape(args.func(args))
    except Exception as exc:  # one line for the control side, never a traceback on stdout
        result = answer.failure(f"{type(exc).__name__}: {exc}")
    print(json.dumps(result, default=str))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
