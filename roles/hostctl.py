"""Host-side command line the control machine calls over SSH: ``python3 -m roles.hostctl CMD``.

Every subcommand prints exactly one JSON object on stdout in the shape of ``roles.answer``
(``changed``, ``failed``, ``msg``, ``data``) and exits 0, or 1 when it failed. Every command
that changes state takes ``--check`` (say what would change, change nothing). Subcommands live
in small modules (``roles.netops`` for network facts and fixes, ``roles.procs`` for starting
and stopping roles, ``roles.deployctl`` for deploy's update and checks, ``roles.guardhost`` for the guard,
``roles.precompile`` for the BPF programs a run's roles will load); this file only
dispatches, importing only the module of the command asked for (a deploy that changes
nothing must stay cheap on a Raspberry Pi); bcc and pyroute2 are imported only by the
commands that use them.
"""

import argparse
import importlib
import json
import sys

COMMANDS = {
    "netops": ("facts", "neigh-show", "neigh-pin", "netfix", "detach-xdp", "headers-shim", "check", "commit"),
    "procs": ("start", "wait-ready", "go", "stop", "status"),
    "deployctl": ("deploy",),
    "guardhost": ("guard-start", "guard-stop", "guard-status", "guard-unit"),
    "precompile": ("precompile",),
}


def _modules(argv: list[str]) -> list[str]:
    """The module of the command in ``argv``, or every module (help, an unknown command)."""
    for name, cmds in COMMANDS.items():
        if argv and argv[0] in cmds:
            return [name]
    return list(COMMANDS)


def main(argv=None):
    from roles import answer

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="roles.hostctl", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in _modules(argv):
        importlib.import_module(f"roles.{name}").register(sub)
    args = parser.parse_args(argv)
    try:
        result = answer.shape(args.func(args))
    except Exception as exc:  # one line for the control side, never a traceback on stdout
        result = answer.failure(f"{type(exc).__name__}: {exc}")
    print(json.dumps(result, default=str))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
