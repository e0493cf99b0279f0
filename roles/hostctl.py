"""Host-side command line the control machine calls over SSH: ``python3 -m roles.hostctl CMD``.

Every subcommand prints exactly one JSON object on stdout (the control side parses it) and
exits 0 on success, 1 with ``{"error": "..."}`` on failure. Subcommands live in small
modules (``roles.netops`` for network facts and fixes, ``roles.procs`` for starting and
stopping roles); this file only dispatches.
"""

import argparse
import json
import sys


def main(argv=None):
    from roles import netops, procs

    parser = argparse.ArgumentParser(prog="roles.hostctl", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for module in (netops, procs):
        module.register(sub)
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except Exception as exc:  # one line for the control side, never a traceback on stdout
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result if result is not None else {}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
