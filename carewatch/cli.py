"""The `carewatch` command line: one entry point for every worker and tool."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from carewatch.logs import setup_logging
from carewatch.settings import Settings, get_settings

Runner = Callable[[Settings, asyncio.Event], Awaitable[None]]


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def run_until_signal(runner: Runner, settings: Settings) -> None:
    """Run an async worker until SIGINT/SIGTERM, then let it shut down cleanly."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runner(settings, stop)

    freeze_startup_objects()
    asyncio.run(main())


def freeze_startup_objects() -> None:
    """Exempt what is alive now (modules, FastStream, pydantic, ...) from the cyclic GC.

    A full collection walks every tracked object: with the imported libraries that took
    30-50 ms, all of it a pause of the worker's loop, and under load it landed on SOS
    presses (measured per worker with gc.callbacks during bench.sos_latency). After the
    freeze, a full collection walks only what the worker made since: about 1 ms. These
    objects live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


WORKERS: dict[str, tuple[str, str]] = {
    "ingest": ("ingest.worker:run", "MQTT -> validate -> dedup -> COPY telemetry -> events bus"),
    "rules": ("rules_engine.worker:run", "events bus -> detectors -> alerts (DB + alerts stream)"),
    "notifier": ("notifier.worker:run", "alerts -> escalation -> outbox -> SMS/WeCom/downlink"),
    "ack-server": ("notifier.ack_app:run", "serve the signed ack links (phone page + API)"),
    "provider-callbacks": (
        "notifier.provider_callbacks:run",
        "receive the providers' pushes: SMS delivery and call reports, SMS replies,"
        " WeCom card button presses",
    ),
    "operator-api": (
        "operator_api.app:run",
        "operator API (FastAPI), the dispatcher console and the grid worker's phone page",
    ),
    "fake-providers": (
        "simulators.fake_providers.server:run",
        "local fake Aliyun SMS and voice, Tencent SMS and WeCom APIs that record what they receive",
    ),
    "run-all": (
        "carewatch.runall:run",
        "ingest, rules, notifier, ack server, provider callbacks and operator API in one"
        " process (small sites, demo)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carewatch",
        description=(
            "carewatch: emergency response for elders living at home. Devices publish over "
            "MQTT; workers ingest, detect (SOS, falls, inactivity) and escalate by SMS and "
            "WeChat until a human acknowledges. Settings come from CAREWATCH_* environment "
            "variables or .env (see docs/configuration.md)."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    db.add_parser("migrate", help="create the database if needed and apply pending migrations")

    reg = sub.add_parser("registry", help="the elder ledger (老年人信息台账)")
    reg_sub = reg.add_subparsers(dest="registry_cmd", required=True)
    imp = reg_sub.add_parser(
        "import",
        help=(
            "import ledger CSV/XLSX files (stations, duty officers, elders, geofence zones);"
            " all or nothing"
        ),
    )
    imp.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="CSV (UTF-8 or GBK) or XLSX; each file's header tells its table; the office"
        " ledger with Chinese headers is what `registry template` writes (docs/registry.md)",
    )
    gw_imp = reg_sub.add_parser(
        "gateways",
        help=(
            "import the gateways' ledger files: device protocols/IMEIs and the platform"
            " products' field mapping (docs/gateways.md); all or nothing"
        ),
    )
    gw_imp.add_argument("files", nargs="+", type=Path)

    regions = reg_sub.add_parser(
        "regions", help="the region tree 市/区县/街道/社区/网格 (docs/registry.md)"
    ).add_subparsers(dest="regions_cmd", required=True)
    regions.add_parser("list", help="print the tree with each node's token scope name")
    regions_imp = regions.add_parser(
        "import", help="create 区县/街道/社区 nodes (and name the city) from a CSV/XLSX table"
    )
    regions_imp.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        help="CSV/XLSX with the columns 区县 (required), 街道, 社区 and 市 (docs/registry.md)",
    )

    tpl = reg_sub.add_parser(
        "template",
        help="write the office ledger template (老年人信息台账模板) with Chinese headers",
    )
    tpl.add_argument(
        "--out",
        type=Path,
        default=Path("老年人信息台账模板.xlsx"),
        help="XLSX (default: 老年人信息台账模板.xlsx) or, ending in .csv, CSV",
    )
    tpl.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    gen = reg_sub.add_parser(
        "generate", help="write a synthetic but plausible street ledger from the facility plan"
    )
    gen.add_argument("--district", default="渝中区", help="district name as in the plan CSV")
    gen.add_argument("--elders", type=int, default=200)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--plan", type=Path, default=None, help="facility plan CSV (default: shipped)")
    gen.add_argument("--out", type=Path, required=True, help="output folder for the CSV files")

    mqtt = sub.add_parser("mqtt", help="broker security").add_subparsers(
        dest="mqtt_cmd", required=True
    )
    cred = mqtt.add_parser(
        "credentials",
        help="write Mosquitto passwd (devices), services.passwd and acl files, mode 0640",
    )
    cred.add_argument("--out", type=Path, required=True)
    cred.add_argument(
        "--group",
        default="mosquitto",
        help="group (name or gid) given the files, the one the broker runs as (default:"
        " mosquitto; the eclipse-mosquitto image: 1883); '' leaves the group alone",
    )
    cred.add_argument(
        "--mount-point",
        default="",
        help="the `mount_point` of this deployment's listeners, when several deployments"
        " share one broker (e.g. siteb/; docs/deployment.md)",
    )
    cred.add_argument(
        "--service-password",
        action="append",
        default=[],
        metavar="NAME=PASSWORD",
        help="service account (ingest, notifier, simulator, gateway); repeatable",
    )

    workers = {
        name: sub.add_parser(name, help=help_text) for name, (_, help_text) in WORKERS.items()
    }
    # `carewatch notifier` runs the worker; `carewatch notifier templates` prints the SMS
    # template texts to register at Aliyun, which depend on the ack base URL in settings.
    workers["ingest"].add_argument(
        "--lane",
        choices=["all", "events", "telemetry"],
        default=None,
        help="run only this lane (default: CAREWATCH_INGEST_LANES, all); `events` and"
        " `telemetry` in two processes let the OS run the alarm lane first (the telemetry"
        " process lowers its own priority: CAREWATCH_BULK_LANE_NICE)",
    )
    notifier_sub = workers["notifier"].add_subparsers(dest="notifier_cmd", required=False)
    notifier_sub.add_parser(
        "templates", help="print the SMS template texts to register at Aliyun for these settings"
    )
    for what, what_help in (
        ("policies", "escalation policies per district / care profile (docs/policies.md)"),
        ("rosters", "duty rosters, leave and substitutes, channel preferences"),
    ):
        ledger = notifier_sub.add_parser(what, help=what_help).add_subparsers(
            dest="ledger_cmd", required=True
        )
        ledger.add_parser(
            "import", help="validate and import ledger files (CSV/XLSX), all or nothing"
        ).add_argument(
            "files",
            nargs="+",
            type=Path,
            metavar="FILE",
            help=(
                "policies table (区县,照护类型,级别,步骤,...)"
                if what == "policies"
                else "shifts, leaves and/or channels tables (值班/请假/接收渠道)"
            )
            + ", CSV or XLSX; examples in docs/examples/",
        )
    check = notifier_sub.add_parser(
        "check",
        help="list every elder for whom some severity reaches nobody (exit 1 if any, or if"
        " the ledger has no elders)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument(
        "--from", dest="start", default=None, metavar="YYYY-MM-DD",
        help="first local day checked (default: today)",
    )  # fmt: skip
    check.add_argument("--days", type=int, default=7, help="days checked (default 7)")

    gateway = sub.add_parser(
        "gateway",
        help="device gateways: 3G/4G and IW watches over TCP, CTWing and OneNET pushes"
        " (docs/gateways.md); one process may serve several",
    )
    gateway.add_argument(
        "protocols",
        nargs="*",
        metavar="PROTOCOL",
        help="watch-tcp, iw-tcp, ctwing and/or onenet (default: CAREWATCH_GATEWAY_SERVE)",
    )

    sim = sub.add_parser("simulate", help="device simulators")
    sim_sub = sim.add_subparsers(dest="sim_cmd", required=True)
    fleet = sim_sub.add_parser("fleet", help="every registered device publishes telemetry")
    fleet.add_argument("--rate", type=float, default=1 / 60, help="messages per device per second")
    fleet.add_argument("--duration", type=float, default=60.0, help="seconds; 0 = until Ctrl-C")
    fleet.add_argument(
        "--realistic",
        action="store_true",
        help="each elder's simulated day (routine, injected events) instead of --rate readings",
    )
    _add_day_options(fleet, 1.0, inject_help="ELDER_ID=KIND@HH:MM[+DURATION], e.g. E1=fall@14:05")
    day = sim_sub.add_parser("day", help="replay one elder's simulated day(s) over MQTT")
    day.add_argument("--elder", required=True, help="elder id")
    day.add_argument("--out", type=Path, default=None, help="write JSON lines here, no MQTT")
    _add_day_options(
        day, 60.0, inject_help="KIND@HH:MM[+DURATION], e.g. fall@14:05, wander@02:30+2h"
    )
    _add_gateway_simulators(sim_sub)
    scen = sim_sub.add_parser("scenario", help="publish one scripted scenario for an elder")
    scen.add_argument("name", choices=["sos", "sos-cancel", "fall", "fall-cancel"])
    scen.add_argument("--elder", required=True, help="elder id (uses that elder's wristband)")

    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline on a generated street with a scripted SOS and print it",
        description="street (default): an SOS, a cancelled fall and a fall, printed. night-sos:"
        " one SOS at night (the night window is set around the wall clock), the grid worker's"
        " SMS reported undelivered, their phone rung, key 1 pressed; prints the timeline as"
        " offsets from the press, every text each recipient got and the press-to-first-ring time.",
    )
    demo.add_argument(
        "scenario",
        nargs="?",
        default="street",
        choices=["street", "night-sos"],
        help="which scripted scenario to run (default: street)",
    )
    demo.add_argument(
        "--escalation-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the demo's CAREWATCH_ESCALATION_WAIT_S: seconds before the next escalation step"
        " (default: 3 for street, to watch a whole escalation in a minute; the setting for"
        " night-sos)",
    )
    demo.add_argument(
        "--out", type=Path, default=None, help="night-sos: also write the result as Markdown"
    )
    demo.add_argument(
        "--daytime",
        action="store_true",
        help="night-sos without the night window: only the SMS receipt can make the phone ring",
    )

    ev = sub.add_parser("eval", help="evaluate detectors on recorded trials")
    ev_sub = ev.add_subparsers(dest="eval_cmd", required=True)
    falls = ev_sub.add_parser("falls", help="fall detector on SisFall/UMAFall recordings")
    falls.add_argument(
        "path", type=Path, nargs="+", help="SisFall or UMAFall folder(s), or dev CSV(.gz) files"
    )
    falls.add_argument("--profile", default="standard", help="care profile thresholds to use")
    falls.add_argument("--json", type=Path, default=None, help="also write the figures here")
    falls.add_argument(
        "--loso", action="store_true", help="leave-one-subject-out: retrain without each subject"
    )
    falls.add_argument(
        "--model", type=Path, default=None, help="model file (default: shipped; --loso retrains)"
    )
    falls.add_argument(
        "--train", type=Path, default=None, metavar="OUT", help="train a model file on PATH..."
    )
    export = ev_sub.add_parser(
        "export", help="alarms' accelerometer windows with their outcome, as a dev CSV"
    )
    export.add_argument("out", type=Path, help="CSV(.gz) file to write")
    export.add_argument("--since", default=None, help="only alarms from this ISO date on")
    export.add_argument(
        "--no-cancelled", action="store_true", help="leave out alarms cancelled with I'm OK"
    )
    days = ev_sub.add_parser(
        "days", help="rules engine on simulated days: false alarms and injected events caught"
    )
    days.add_argument("--elders", type=int, default=20, help="simulated elders")
    days.add_argument("--days", type=float, default=7.0, help="simulated days")
    days.add_argument("--seed", type=int, default=0)
    days.add_argument(
        "--inject",
        action="append",
        default=[],
        help="ELDER=KIND@[dN/]HH:MM[+DURATION] (ELDER: id or index), e.g. 0=fall@d1/14:05;"
        " repeatable; default: a scenario set spread over the elders",
    )
    days.add_argument(
        "--respond-after",
        type=float,
        default=1800.0,
        help="seconds after which a simulated carer closes an open alert (0: never)",
    )
    days.add_argument("--json", type=Path, default=None, help="also write the figures here")
    homes = ev_sub.add_parser(
        "homes", help="inactivity rules on a real home's sensor log, with injected incidents"
    )
    homes.add_argument("log", type=Path, help="sensor log in the layout of data/homes/ (.gz ok)")
    homes.add_argument("--incidents", type=int, default=10, help="incidents per category")
    homes.add_argument("--seed", type=int, default=0)
    homes.add_argument("--window", type=float, default=6.0, help="hours of removed signs")
    homes.add_argument("--skip-days", type=int, default=3, help="days before any incident")
    homes.add_argument("--sensor-map", type=Path, default=None, help="CSV area,sensor,kind,room")
    homes.add_argument("--tz", default=None, help="the home's time zone (default: the site's)")
    homes.add_argument(
        "--dead",
        action="append",
        default=[],
        help="SENSOR[@DAY]: sensors whose id contains SENSOR fall silent from day DAY",
    )
    homes.add_argument("--json", type=Path, default=None, help="also write the figures here")
    _describe_subcommands(parser)
    return parser


def _describe_subcommands(parser: argparse.ArgumentParser) -> None:
    """A subcommand's own --help opens with the line its parent lists it with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                if child.description is None and helps.get(name):
                    child.description = helps[name]
                _describe_subcommands(child)


def _add_gateway_simulators(sim_sub: Any) -> None:
    """`carewatch simulate watch3g|iw|ctwing|onenet`: a device or platform (simulators.gateways)."""
    for name, help_text in (
        ("watch3g", "a 3G/4G watch over TCP: logs in (LK), then sends the chosen frame"),
        ("iw", "an IW watch over TCP: logs in (IWAP00), then sends the chosen frame"),
    ):
        p = sim_sub.add_parser(name, help=help_text)
        p.add_argument("--imei", required=True, help="the watch's id as in the gateway ledger")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=None, help="default: the gateway's port")
        p.add_argument("--send", choices=["heartbeat", "sos", "fall", "position"], default="sos")
        p.add_argument("--listen", type=float, default=5.0, help="seconds to print downlinks")
    for name, help_text in (
        ("ctwing", "a CTWing subscription push (dataReport), retried like the platform"),
        ("onenet", "a OneNET datapoint push, signed with CAREWATCH_ONENET_TOKEN"),
    ):
        p = sim_sub.add_parser(name, help=help_text)
        p.add_argument("--imei", required=True, help="device IMEI (CTWing) or dev_id (OneNET)")
        p.add_argument("--url", default=None, help="default: the gateway's endpoint")
        p.add_argument(
            "--field",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a payload field / datastream, e.g. smoke_state=1; repeatable",
        )


def _add_day_options(parser: argparse.ArgumentParser, speed: float, inject_help: str) -> None:
    """Options of the realistic-day simulator (simulators.days, simulators.replay)."""
    parser.add_argument("--speed", type=float, default=speed, help="simulated x real time; 0 = max")
    parser.add_argument("--start", default=None, help="local HH:MM today or ISO time; default now")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--inject", action="append", default=[], help=f"injected event, repeatable: {inject_help}"
    )


def _mqtt_credentials(
    settings: Settings, out: Path, services: list[str], group: str, mount_point: str
) -> int:
    import psycopg

    from carewatch.mqtt_auth import write_broker_files

    accounts = dict(item.split("=", 1) for item in services)
    with psycopg.connect(settings.database_url) as conn:
        devices = [r[0] for r in conn.execute("SELECT id FROM devices ORDER BY id")]
    passwd, services_passwd, acl = write_broker_files(
        out,
        settings.mqtt_device_secret.get_secret_value(),
        devices,
        accounts,
        group or None,
        mount_point,
    )
    print(
        f"wrote {passwd} ({len(devices)} devices), {services_passwd} ({len(accounts)}"
        f" services) and {acl}"
    )
    return 0


def load_settings() -> Settings | None:
    """The settings, or None after saying on stderr which ones are refused and why."""
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            reason = error["msg"].removeprefix("Value error, ")
            print(f"carewatch: {where + ': ' if where else ''}{reason}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    loaded = load_settings()
    if loaded is None:
        return 2
    settings = loaded
    setup_logging(settings.log_level, settings.log_json)
    if args.command in ("registry", "db") or getattr(args, "notifier_cmd", None):
        return _admin_command(args, settings)
    return _dispatch(args, settings)


def _admin_command(args: argparse.Namespace, settings: Settings) -> int:
    """A one-shot administrator's command: a database that is unreachable or not yet
    migrated is one line on stderr and exit 1, not a traceback (workers keep theirs)."""
    import psycopg

    try:
        return _dispatch(args, settings)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"cannot reach the database (CAREWATCH_DATABASE_URL): {first}", file=sys.stderr)
    except psycopg.errors.UndefinedTable as exc:
        first = str(exc).strip().splitlines()[0]
        print(
            f"the database is not migrated ({first}): run `carewatch db migrate` first",
            file=sys.stderr,
        )
    return 1


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    cmd = args.command

    if cmd == "db":
        from carewatch.db.migrate import ensure_database, migrate

        ensure_database(settings.database_url)
        applied = migrate(settings.database_url)
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
        return 0
    if cmd == "registry":
        if args.registry_cmd == "gateways":
            return int(_load("gateways.ledger:cli_import")(settings, args.files))
        if args.registry_cmd == "import":
            result: int = _load("registry.importer:cli_import")(settings, args.files)
            return result
        if args.registry_cmd == "regions":
            return int(
                _load("registry.regions:cli_regions")(
                    settings, args.regions_cmd, getattr(args, "file", None)
                )
            )
        if args.registry_cmd == "template":
            return int(_load("registry.template:cli_template")(args))
        return int(_load("simulators.street:cli_generate")(args))
    if cmd == "mqtt":
        return _mqtt_credentials(
            settings, args.out, args.service_password, args.group, args.mount_point
        )
    if cmd == "notifier" and args.notifier_cmd in ("policies", "rosters"):
        return int(
            _load("notifier.policy_ledger:cli_import")(settings, args.notifier_cmd, args.files)
        )
    if cmd == "notifier" and args.notifier_cmd == "check":
        return int(_load("notifier.check:cli_check")(settings, args))
    if cmd == "notifier" and args.notifier_cmd == "templates":
        print(_load("notifier.channels.templates:registration_text")(settings), end="")
        return 0
    if cmd == "ingest" and args.lane is not None:
        settings = settings.model_copy(update={"ingest_lanes": args.lane})
    if cmd in WORKERS:
        run_until_signal(_load(WORKERS[cmd][0]), settings)
        return 0
    if cmd == "gateway":
        from functools import partial

        try:
            protocols = _load("gateways.run:chosen")(settings, args.protocols)
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2
        runner = partial(_load("gateways.run:run"), protocols=protocols)
        run_until_signal(runner, settings)
        return 0
    if cmd == "simulate" and args.sim_cmd in ("watch3g", "iw", "ctwing", "onenet"):
        return int(_load("simulators.gateways:cli_main")(settings, args))
    if cmd == "simulate":
        return int(_load("simulators.cli:main")(settings, args))
    if cmd == "demo":
        return int(_load("simulators.demo:main")(settings, args))
    if cmd == "eval" and args.eval_cmd == "homes":
        return int(_load("evaluation.homes:cli_main")(args))
    if cmd == "eval" and args.eval_cmd == "days":
        return int(_load("evaluation.days:cli_main")(args))
    if cmd == "eval" and args.eval_cmd == "export":
        return int(_load("evaluation.fall_export:cli_main")(settings, args))
    if cmd == "eval":
        return int(_load("evaluation.falls:cli_main")(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
