"""tcpskim's Invoke tasks: the control side's command line (``invoke --list``).

Thin by design: each task validates the inventory, then calls one function of the ``tcpskim``
package and prints its per-host summary. Every task that talks to hosts takes
``--inventory FILE`` (default: $TCPSKIM_INVENTORY, else inventory.toml, the local lab).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from tcpskim import inventory as inventory_mod
from tcpskim import options
from tcpskim.fleet import Fleet, summary

INV_HELP = "inventory file (default: $TCPSKIM_INVENTORY, else inventory.toml = the local lab)"
HOSTS_HELP = "comma list of host names (default: all)"


def _inventory(path):
    """Load and validate, or stop with a one-line error before any host is touched."""
    try:
        return inventory_mod.load(path)
    except inventory_mod.InventoryError as exc:
        raise Exit(f"error: {exc}", code=2) from None


@contextlib.contextmanager
def _fleet(c, inv, accept_new_keys=False, report=True):
    """The Fleet, once the files the inventory names are checked (before any SSH).
    ``report=False``: the caller reports each host's failure itself (once)."""
    _checked(inventory_mod.check_paths, inv, creating_known_hosts=accept_new_keys)
    with Fleet(inv, accept_new_keys=accept_new_keys, sudo_password=c.config.sudo.password) as fleet:
        if report:
            fleet.progress = _report_failure  # a failed host is told at once, not after the slowest
        yield fleet


def _report_failure(result):
    if result.failed:
        print(f"{result.host}: failed: {result.detail}", file=sys.stderr, flush=True)


def _finish(title, results, columns=None):
    if not summary(title, results, columns):
        raise Exit(code=1)


def _checked(parse, *args, **kw):
    """An option parsed by ``tcpskim.options``, or a one-line error naming it (exit 2)."""
    try:
        return parse(*args, **kw)
    except inventory_mod.InventoryError as exc:
        raise Exit(f"error: {exc}", code=2) from None


def _select(inv, hosts):
    return _checked(options.hosts, inv, hosts)


# --- lab ------------------------------------------------------------------------------------
def _lab_inventory(path):
    inv = _inventory(path)
    if inv.lab is None:
        raise Exit(f"error: {inv.path.name} is not a lab inventory (testbed.lab = true)", code=2)
    return inv


@task(help={"inventory": INV_HELP,
            "dry-run": "print each step (and its commands) the lab still needs, change nothing"})
def lab_up(c, inventory=None, dry_run=False):
    """Build the local lab: a namespace, sshd and checkout per inventory host (root, Linux)."""
    from tcpskim import lab

    inv = _lab_inventory(inventory)
    try:
        lab.up(inv, dry_run=dry_run)
    except lab.LabError as exc:
        raise Exit(f"error: {exc}", code=1) from None


@task(help={"inventory": INV_HELP})
def lab_down(c, inventory=None):
    """Remove every namespace, link, process and file the lab made (also after a failed up)."""
    from tcpskim import lab

    inv = _lab_inventory(inventory)
    try:
        lab.down(inv)
    except lab.LabError as exc:
        raise Exit(f"error: {exc}", code=1) from None


@task(help={"inventory": INV_HELP})
def lab_status(c, inventory=None):
    """Show each lab host (namespace, link, MAC, sshd, checkout commit, RPS) and the device IRQs' steering."""
    from tabulate import tabulate

    from tcpskim import lab

    inv = _lab_inventory(inventory)
    try:
        rows, irqs = lab.status(inv), lab.irq_status(inv)
    except lab.LabError as exc:
        raise Exit(f"error: {exc}", code=1) from None
    print(tabulate(rows, headers="keys"))
    print(f"\ndevice IRQs (hw_cpu: may land on the hardworker's CPU {lab.cpu_plan(inv)[inv.hardworker.name]})")
    print(tabulate(irqs, headers="keys"))


# --- fleet tasks ----------------------------------------------------------------------------
@task(help={"inventory": INV_HELP, "hosts": HOSTS_HELP,
            "install-deps": "install host prerequisites (bcc, headers, pyroute2, iproute2, ethtool) with apt",
            "accept-new-host-keys": "trust host keys not yet in known_hosts (never a changed key)",
            "check": "report what each host would change, change nothing",
            "guard-unit": "also write and enable the guard's systemd unit (real hosts only; docs/guard.md)"})
def deploy(c, inventory=None, hosts=None, install_deps=False, accept_new_host_keys=False, check=False,
           guard_unit=False):
    """Clone or git pull --ff-only the code on every host and check its runtime."""
    from tcpskim.deploy import code_source, control_warnings, deploy as do_deploy

    inv = _inventory(inventory)
    targets = _select(inv, hosts)
    if guard_unit and inv.lab is not None:  # lab hosts are namespaces of this machine: one systemd
        raise Exit("error: --guard-unit: the lab's hosts share this machine's systemd; the unit is for "
                   "real hosts (in the lab: invoke guard.start)", code=2)
    try:
        code_source(inv)  # which branch hosts pull: known before any SSH
        warnings = control_warnings(inv)
    except (ValueError, RuntimeError) as exc:
        raise Exit(f"error: {exc}", code=2) from None
    for w in warnings:
        print(f"warning: {w}")
    with _fleet(c, inv, accept_new_host_keys) as fleet:
        results = do_deploy(fleet, targets, install=install_deps, check=check, guard_unit=guard_unit)
    _finish("deploy (check)" if check else "deploy", results, ["commit"])


@task(help={"inventory": INV_HELP, "hosts": HOSTS_HELP,
            "accept-new-host-keys": "trust host keys not yet in known_hosts (never a changed key)"})
def doctor(c, inventory=None, hosts=None, accept_new_host_keys=False):
    """Check every host: ssh, sudo, kernel, arch, bcc, headers, interface, XDP modes, attribution, commit, clock."""
    from tcpskim.doctor import COLUMNS, doctor as do_doctor

    inv = _inventory(inventory)
    targets = _select(inv, hosts)
    with _fleet(c, inv, accept_new_host_keys) as fleet:
        results = do_doctor(fleet, targets)
    _finish("doctor", results, COLUMNS)


@task(help={"inventory": INV_HELP, "dry-run": "print the plan, change nothing",
            "watch": "afterwards keep pinging the hosts and re-add a host's route when it stops answering "
                     "(until Ctrl-C; ends with the per-host table)",
            "interval": "--watch: seconds between ping rounds (default 10)",
            "misses": "--watch: missed pings in a row before a host's route is re-added (default 2)"})
def fix_network(c, inventory=None, dry_run=False, watch=False, interval=None, misses=None):
    """Pin permanent neighbour (ARP) entries between hosts; add control-machine routes where needed."""
    from tcpskim import netfix

    inv = _inventory(inventory)
    interval = _checked(options.number, 10 if interval is None else interval, "interval", "watch_interval_s")
    misses = _checked(options.number, 2 if misses is None else misses, "misses", "watch_misses")
    _checked(inventory_mod.check_paths, inv)  # before the control routes, too
    ok = True
    # Routes first: on a testbed the control machine may reach a host only through them.
    routes = netfix.control_routes(c, inv, dry_run)
    if routes:
        ok &= summary("fix-network: control-machine routes", routes)
    with _fleet(c, inv) as fleet:
        macs, unknown = netfix.plan_macs(fleet, list(inv.hosts))
        pinned = netfix.pin_neighbours(fleet, [h for h in inv.hosts if h.name in macs], macs, dry_run)
        ok &= summary("fix-network: neighbour pins" + (" (dry run)" if dry_run else ""), pinned + unknown,
                      ["ip", "mac", "pinned"])
    if watch:
        from tcpskim.netwatch import Watch

        print(f"watching {len(inv.hosts)} host(s): a ping round every {interval:g} s (Ctrl-C ends)")
        rows = Watch(c, inv, misses=misses, dry_run=dry_run).run(interval)
        ok &= summary("fix-network --watch", rows, ["outages", "repairs"])
    if not ok:
        raise Exit(code=1)


@task(help={"inventory": INV_HELP, "hosts": HOSTS_HELP,
            "timeout": "seconds between SIGTERM and SIGKILL (default 5)"})
def stop(c, inventory=None, hosts=None, timeout=None):
    """Stop tcpskim roles and the network guard on every host; detach any XDP program."""
    from tcpskim.stop import stop as do_stop

    inv = _inventory(inventory)
    targets = _select(inv, hosts)
    timeout = _checked(options.number, 5 if timeout is None else timeout, "timeout", "stop_timeout_s")
    with _fleet(c, inv) as fleet:
        results = do_stop(fleet, targets, timeout)
    _finish("stop", results, ["guard"])


@task(help={"inventory": INV_HELP, "hosts": HOSTS_HELP})
def accept_host_keys(c, inventory=None, hosts=None):
    """Trust the host keys the hosts offer now (new or changed), printing each fingerprint."""
    from tcpskim.hostkeys import accept

    inv = _inventory(inventory)
    targets = _select(inv, hosts)
    _checked(inventory_mod.check_paths, inv, creating_known_hosts=True)
    _finish("accept-host-keys", accept(inv, targets), ["fingerprint"])


# --- experiments ----------------------------------------------------------------------------
@task(help={"inventory": INV_HELP,
            "rate": "records per second per sensor; a comma list sweeps (default: inventory)",
            "size": "record payload bytes; a comma list sweeps (default: inventory)",
            "duration": "seconds in each measurement window",
            "warmup": "seconds of traffic before the window opens",
            "modes": "comma list of xdp,tcp (default: both)",
            "repeat": "repeats of every (mode, rate, size); modes alternate within each repeat",
            "wakeup": "consumer wake-up, same in both modes: per-record or batch:<N>ms",
            "sensors": "how many sensor hosts send (default 1)",
            "idle": "include an idle-baseline trial per repeat (default on unless the inventory's "
                    "experiment.idle is false; --no-idle to skip)",
            "tag": "a word appended to the run id",
            "work-us": "simulated decision work per record on the hardworker, microseconds",
            "deliver": "what the hardworker is promised, same in both modes: all, "
                       "filter:outside:LO..HI, filter:deadband:D, filter:every:N or latest[:HZ] "
                       "(default: inventory, else all); the logger always stores every record",
            "progress": "show a progress bar (default on when the terminal is interactive)",
            "guard": "run the network guard on every host during the run (also experiment.guard = true); "
                     "a guard the run started is stopped at its end, one already running is left running"})
def run_experiment(c, inventory=None, rate=None, size=None, duration=None, warmup=None, modes=None, repeat=None,
                   wakeup=None, sensors=None, idle=True, tag="", work_us=None, deliver=None, progress=True,
                   guard=False):
    """Run trials (idle baseline, xdp, tcp) and measure the hardworker; results/<run-id>/."""
    from tcpskim.experiment import RunFailed, Runner
    from tcpskim.plan import params

    inv = _inventory(inventory)
    try:
        p = params(inv.experiment, rate=rate, size=size, duration=duration, warmup=warmup, modes=modes,
                   repeat=repeat, wakeup=wakeup, sensors=sensors,
                   idle=idle and inv.experiment["idle"], tag=tag,  # either one turns idle off
                   max_sensors=len(inv.sensors), work_us=work_us, deliver=deliver,
                   guard=guard or inv.experiment["guard"])
    except inventory_mod.InventoryError as exc:
        raise Exit(f"error: {exc}", code=2) from None
    with _fleet(c, inv, report=False) as fleet:  # the runner reports each host's failure once
        try:
            Runner(fleet, p, progress=progress and sys.stderr.isatty()).run()
        except RunFailed:  # the runner already printed what failed and where the results are
            raise Exit(code=1) from None


def _run_dir(run):
    from tcpskim import CHECKOUT
    from tcpskim.results import RunFolder

    base = CHECKOUT / "results"
    if run not in ("", "latest"):
        return base / run if (base / run).exists() else Path(run)
    try:
        return RunFolder.latest(base).path
    except FileNotFoundError as exc:
        raise Exit(f"error: {exc}: run invoke run-experiment first", code=2) from None


def _render(run_dir):
    from tcpskim.report import write_report
    from tcpskim.results import RunFileError, read_meta

    try:
        read_meta(run_dir)  # a run.json the runner wrote, or one line naming the file and key
        text, files = write_report(run_dir)
    except RunFileError as exc:
        raise Exit(f"error: {exc}", code=2) from None
    print(text)
    print(f"\nwrote {', '.join(str(f.relative_to(run_dir)) for f in files)} in {run_dir}")


@task(help={"inventory": INV_HELP, "run": "run id or folder (default: the latest run)"})
def collect(c, run="", inventory=None):
    """Fetch a run's files from every host, then print its tables and write report.md and plots."""
    from tcpskim.collect import collect as do_collect

    from tcpskim.collect import run_hosts

    inv = _inventory(inventory)
    run_dir = _run_dir(run)
    try:
        run_hosts(run_dir, inv)  # a run folder whose hosts this inventory knows, before any SSH
    except ValueError as exc:
        raise Exit(f"error: {exc}", code=2) from None
    with _fleet(c, inv) as fleet:
        ok = summary(f"collect {run_dir.name}", do_collect(fleet, run_dir), ["files"])
    _render(run_dir)
    if not ok:
        raise Exit(code=1)


@task(positional=["run"], help={"run": "run id or folder, or 'latest'"})
def report(c, run):
    """Re-render a run's tables, report.md and plots from local files alone."""
    _render(_run_dir(run))


# The demo's defaults, chosen to give a resolved answer at 50 Hz within 3 minutes on the lab
# (README, "Quick start"). The answer is the attributed CPU per record (busy time of the
# hardworker's dedicated CPU minus other tasks, from its tracepoints), so no idle trial is
# subtracted and none is run: at 50 Hz an idle trial's noise was the size of the stream's cost
# and busy - idle came out negative. The replicate is the trial: the attributed figure varied
# by 6-7 % between trials of a mode here (8 trials, a compile beside them on the hardworker
# CPU), and 3 trials give a Student-t CI that excludes 0 below a 40 % spread. 4 repeats took
# 188 s on that loaded machine (an xdp trial 27 s with its bcc compiles, a tcp trial 16 s);
# 3 repeats of 5 s windows (250 records per trial) leave a margin under the 3 minutes.
DEMO_DURATION_S, DEMO_REPEAT = 5, 3


@task(help={"inventory": INV_HELP, "duration": f"seconds per measurement window (default {DEMO_DURATION_S})",
            "repeat": f"repeats of both modes (default {DEMO_REPEAT})"})
def demo(c, inventory=None, duration=None, repeat=None):
    """The main job on the lab, end to end: lab.up, deploy, fix-network, run-experiment --rate 50, collect."""
    inv = _lab_inventory(inventory)
    path = str(inv.path)
    duration = _checked(options.number, DEMO_DURATION_S if duration is None else duration, "duration", "duration_s")
    repeat = _checked(options.number, DEMO_REPEAT if repeat is None else repeat, "repeat", "repeat")
    lab_up(c, inventory=path)
    deploy(c, inventory=path)
    fix_network(c, inventory=path)
    run_experiment(c, inventory=path, rate="50", duration=duration, repeat=repeat, idle=False)
    collect(c, inventory=path)


# --- the network guard ----------------------------------------------------------------------
@task(help={"inventory": INV_HELP, "hosts": HOSTS_HELP,
            "check": "report what each host would do (start / reload / unchanged), change nothing"})
def guard_start(c, inventory=None, hosts=None, check=False):
    """Start the network guard on every host (or make a running one reload): peers' MACs read live."""
    from tcpskim import guardops

    inv = _inventory(inventory)
    targets = _select(inv, hosts)
    with _fleet(c, inv) as fleet:
        results = guardops.start(fleet, targets, check=check)
    _finish("guard.start (check)" if check else "guard.start", results, ["action", "pid", "peers", "cpus"])


@task(help={"inventory": INV_HELP, "hosts": HOSTS_HELP,
            "timeout": "seconds between SIGTERM and SIGKILL (default 5)",
            "check": "report which guard would be stopped, change nothing"})
def guard_stop(c, inventory=None, hosts=None, timeout=None, check=False):
    """Stop the network guard on every host (idempotent)."""
    from tcpskim import guardops

    inv = _inventory(inventory)
    targets = _select(inv, hosts)
    timeout = _checked(options.number, 5 if timeout is None else timeout, "timeout", "stop_timeout_s")
    with _fleet(c, inv) as fleet:
        results = guardops.stop(fleet, targets, timeout, check=check)
    _finish("guard.stop (check)" if check else "guard.stop", results, ["stopped"])


@task(help={"inventory": INV_HELP, "hosts": HOSTS_HELP,
            "events": "how many recent events to show per host (default 10)"})
def guard_status(c, inventory=None, hosts=None, events=None):
    """Show each host's guard: state, live pins, counters and its last events with their times."""
    from tcpskim import guardops

    inv = _inventory(inventory)
    targets = _select(inv, hosts)
    events = _checked(options.number, 10 if events is None else events, "events", "guard_events")
    with _fleet(c, inv) as fleet:
        results = guardops.status(fleet, targets, events)
    guardops.print_events(results)
    _finish("guard.status", results, ["state", "pins", "counts"])


ns = Collection(deploy, doctor, fix_network, stop, accept_host_keys, run_experiment, collect, report, demo)
ns.add_collection(Collection("lab", up=lab_up, down=lab_down, status=lab_status))
ns.add_collection(Collection("guard", start=guard_start, stop=guard_stop, status=guard_status))
