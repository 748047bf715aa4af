"""Scheduled runs: a pipeline's ``schedule:`` as a GitHub Actions workflow or a crontab line.

Both call ``ftpipe run FILE --json`` and keep the run store between runs, so a scheduled
run of an unchanged pipeline is all cache hits. Both refuse to overlap runs (a
``concurrency`` group; ``flock -n``).

Time zones: GitHub Actions reads cron in UTC. A schedule in another zone is converted
when that zone keeps one offset all year; a zone with daylight saving time is refused,
since no UTC cron expression fires at the same local time in winter and in summer.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ftpipe import __version__
from ftpipe.errors import UsageError
from ftpipe.spec.interpolate import env_refs

UTC_NAMES = {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "GMT", "Etc/GMT", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu"}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


class ScheduleError(UsageError):
    """The schedule cannot be expressed where it was asked for."""


# --------------------------------------------------------------------------- time zones


def _offsets(tz: ZoneInfo | None, days: int = 2 * 366) -> list[int]:
    """UTC offsets in minutes, one a day from today on (``tz`` None: this machine's zone)."""
    start = int(time.time())
    out = []
    for d in range(0, days):
        ts = start + d * 86400
        if tz is None:
            out.append(time.localtime(ts).tm_gmtoff // 60)
        else:
            off = datetime.fromtimestamp(ts, tz).utcoffset() or timedelta(0)
            out.append(int(off.total_seconds()) // 60)
    return out


def fixed_offset(tz_name: str | None) -> int | None:
    """The zone's UTC offset in minutes if it never changes (None: it varies); ``tz_name``
    None means this machine's zone."""
    if tz_name in UTC_NAMES:
        return 0
    offs = _offsets(ZoneInfo(tz_name) if tz_name else None)
    return offs[0] if len(set(offs)) == 1 else None


def _describe_offsets(tz_name: str) -> str:
    offs = sorted(set(_offsets(ZoneInfo(tz_name))))
    return " and ".join(_fmt_offset(o) for o in offs)


def _fmt_offset(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"UTC{sign}{h}" + (f":{m:02d}" if m else "")


# --------------------------------------------------------------------------- cron shifting


def _expand(field: str, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for part in field.split(","):
        rng, _, step = part.partition("/")
        if rng == "*":
            a, b = lo, hi
        elif "-" in rng:
            a, b = (int(x) for x in rng.split("-"))
        else:
            a = b = int(rng)
            if step:
                b = hi
        out.update(range(a, b + 1, int(step) if step else 1))
    return out


def _compress(values: set[int], lo: int, hi: int) -> str:
    if values == set(range(lo, hi + 1)):
        return "*"
    vals = sorted(values)
    parts, i = [], 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        parts.append(str(vals[i]) if j == i else (f"{vals[i]},{vals[j]}" if j == i + 1 else f"{vals[i]}-{vals[j]}"))
        i = j + 1
    return ",".join(parts)


def shift_cron(cron: str, minutes: int) -> list[str]:
    """The cron expression(s) that fire ``minutes`` later than ``cron`` (negative: earlier).

    Raises ScheduleError when a day-of-month/month/weekday restriction would have to move
    across a day boundary in a way one cron expression cannot say."""
    fields = cron.split()
    if minutes == 0:
        return [cron]
    minute_f, hour_f, dom, month, dow = fields
    by_minute: dict[tuple[int, int], set[int]] = {}  # (day delta, new minute) -> new hours
    every_day = dom == "*" and month == "*" and dow == "*"  # then moving across midnight changes nothing
    for h in _expand(hour_f, 0, 23):
        for m in _expand(minute_f, 0, 59):
            total = h * 60 + m + minutes
            day, rest = divmod(total, 24 * 60)
            by_minute.setdefault((0 if every_day else day, rest % 60), set()).add(rest // 60)
    groups: dict[tuple[int, frozenset[int]], set[int]] = {}  # (day, hours) -> minutes
    for (day, new_m), hours in by_minute.items():
        groups.setdefault((day, frozenset(hours)), set()).add(new_m)
    out = []
    for (day, hour_set), mins in sorted(groups.items(), key=lambda kv: (kv[0][0], min(kv[0][1]), min(kv[1]))):
        new_dom, new_dow = _shift_days(cron, dom, month, dow, day)
        out.append(f"{_compress(mins, 0, 59)} {_compress(set(hour_set), 0, 23)} {new_dom} {month} {new_dow}")
    return out


def _shift_days(cron: str, dom: str, month: str, dow: str, day: int) -> tuple[str, str]:
    if day == 0:
        return dom, dow
    why = f"cron {cron!r}: the time zone conversion moves some runs to the {'previous' if day < 0 else 'next'} day"
    if month != "*":
        raise ScheduleError(
            f"{why}, which can cross into another month", hint="write schedule.cron in UTC (timezone: UTC)"
        )
    if dom != "*" and dow != "*":
        raise ScheduleError(
            f"{why}, and it restricts both day of month and weekday", hint="write schedule.cron in UTC (timezone: UTC)"
        )
    if dow != "*":
        days = {d % 7 for d in _expand(dow, 0, 7)}
        return dom, _compress({(d + day) % 7 for d in days}, 0, 6)
    days = _expand(dom, 1, 31)
    if (day < 0 and min(days) < 2) or (day > 0 and max(days) > 27):
        raise ScheduleError(
            f"{why}, which crosses a month boundary for day(s) {dom}", hint="write schedule.cron in UTC (timezone: UTC)"
        )
    return _compress({d + day for d in days}, 1, 31), dow


def to_zone(cron: str, from_tz: str, to_tz: str | None, *, where: str) -> list[str]:
    """Convert ``cron`` written in ``from_tz`` to ``to_tz`` (None: this machine's zone)."""
    if from_tz == to_tz:
        return [cron]
    src = fixed_offset(from_tz)
    dst = fixed_offset(to_tz)
    if src is None or dst is None:
        if to_tz is None and _offsets(ZoneInfo(from_tz)) == _offsets(None):
            return [cron]  # this machine keeps the schedule's zone, DST and all
        varying = from_tz if src is None else (to_tz or "this machine's time zone")
        raise ScheduleError(
            f"schedule.timezone {from_tz}: {where} reads cron in {to_tz or 'this machine’s time zone'}, and "
            f"{varying} changes its UTC offset during the year"
            + (f" ({_describe_offsets(from_tz)})" if src is None else "")
            + ", so no single cron expression runs at the same local time all year",
            hint=_utc_suggestion(cron, from_tz)
            if src is None and to_tz == "UTC"
            else "write schedule.cron in UTC (timezone: UTC) and accept the seasonal shift in local time",
        )
    return shift_cron(cron, dst - src)


def _utc_suggestion(cron: str, tz_name: str) -> str:
    offs = sorted(set(_offsets(ZoneInfo(tz_name))))
    options = []
    for off in offs:
        try:
            options.append(f"{' + '.join(shift_cron(cron, -off))!r} (matches {_fmt_offset(off)})")
        except ScheduleError:
            pass
    if not options:
        return "write schedule.cron in UTC and set timezone: UTC"
    return "write the schedule in UTC and set timezone: UTC, e.g. cron " + " or ".join(options)


# --------------------------------------------------------------------------- the pipeline's needs


def extras_for(pipeline: Any) -> list[str]:
    """The ftpipe extras the machine that runs ``ftpipe run`` needs (from the plugins' caps)."""
    from ftpipe.extras import runner_extras

    return runner_extras(pipeline)


def needs_torch(pipeline: Any) -> bool:
    from ftpipe.extras import needs_torch as torch_here

    return torch_here(pipeline)


def repo_root(start: Path) -> Path:
    """The git work tree holding ``start`` (the workflow's checkout), else the current folder."""
    for d in [start, *start.parents]:
        if (d / ".git").exists():
            return d
    return Path.cwd().resolve()


def _store_rel(path: Path, root: Path) -> str:
    """The run store the workflow caches and runs with (FTPIPE_STORE), relative to the
    checkout: the one `ftpipe run` finds from the pipeline's folder in this repository."""
    from ftpipe.store_location import locate_store

    store = locate_store(path.resolve().parent, environ=False).path
    try:
        return store.relative_to(root).as_posix()
    except ValueError:
        return ".ftpipe"


def _is_ftpipe_source(root: Path) -> bool:
    try:
        return re.search(r'^name\s*=\s*"ftpipe"', (root / "pyproject.toml").read_text(), re.M) is not None
    except OSError:
        return False


def _scheduled(loaded: Any, path: Path) -> Any:
    sched = loaded.pipeline.schedule
    if sched is None:
        raise UsageError(
            f"{path} has no `schedule:` block, so there is nothing to schedule",
            hint='add one, e.g.  schedule: {cron: "17 3 * * 1", timezone: UTC}',
        )
    return sched


# --------------------------------------------------------------------------- GitHub Actions


@dataclass(frozen=True)
class Workflow:
    text: str
    crons: list[str]
    secrets: list[str]
    pipeline: str
    pipeline_rel: str
    store_rel: str


def _q(s: str) -> str:
    return json.dumps(s)  # a double-quoted YAML scalar


def _gh_expr_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def github_workflow(
    path: Path,
    loaded: Any,
    *,
    root: Path | None = None,
    install: str | None = None,
    runs_on: str = "ubuntu-latest",
    python: str = "3.11",
) -> Workflow:
    """A scheduled GitHub Actions workflow for the pipeline at ``path``."""
    sched = _scheduled(loaded, path)
    p = loaded.pipeline
    name = p.name
    root = (root or repo_root(path.resolve().parent)).resolve()
    try:
        rel = path.resolve().relative_to(root).as_posix()
    except ValueError:
        raise UsageError(
            f"{path} is outside the repository at {root}",
            hint="run the command inside the repository that holds the pipeline",
        ) from None
    store_rel = _store_rel(path, root)
    crons = to_zone(sched.cron, sched.timezone, "UTC", where="GitHub Actions")
    refs = env_refs(loaded.doc.data if loaded.doc is not None else {})
    extras = extras_for(p)
    spec = install or (
        (".[" + ",".join(extras) + "]")
        if _is_ftpipe_source(root) and extras
        else "."
        if _is_ftpipe_source(root)
        else f"ftpipe[{','.join(extras)}]=={__version__}"
        if extras
        else f"ftpipe=={__version__}"
    )
    local_note = "" if sched.timezone in UTC_NAMES else f"  # {sched.cron} in {sched.timezone}"
    cron_lines = "\n".join(f"    - cron: {_q(c)}{local_note}" for c in crons)
    env_lines = []
    for ref in refs:
        expr = f"secrets.{ref.name}"
        if ref.default is not None:
            expr += f" || {_gh_expr_str(ref.default)}"
        env_lines.append(f"          {ref.name}: ${{{{ {expr} }}}}")
    ray_note = ""
    from ftpipe.spec.models import RayExecutor

    if isinstance(p.executor, RayExecutor):
        ray_note = (
            "          # The Ray cluster must be reachable from the runner (RAY_ADDRESS). With token auth add:\n"
            "          #   RAY_AUTH_MODE: token\n"
            "          #   RAY_AUTH_TOKEN: ${{ secrets.RAY_AUTH_TOKEN }}\n"
        )
    # secrets reach only the step that runs the pipeline: not pip (third-party build code),
    # not the cache or upload actions
    run_env = (
        (
            "        env:  # the pipeline's ${env:...} references, for this step only\n"
            + "".join(line + "\n" for line in env_lines)
            + ray_note
        )
        if env_lines or ray_note
        else ""
    )
    torch = ""
    if needs_torch(p):
        torch = "          python -m pip install torch --index-url https://download.pytorch.org/whl/cpu\n"
    backend_setup = ""
    from ftpipe.extras import managed_env

    if managed_env(p):
        backend_setup = f"          ftpipe backends install {managed_env(p)}\n"
    key = f"ftpipe-store-{name}"
    text = f"""\
# Generated by `ftpipe schedule github {rel}` (ftpipe {__version__}); regenerate it after
# changing the pipeline's schedule or secrets. Runs the pipeline on its schedule and on demand;
# a run never overlaps another, and the run store is kept between runs, so unchanged steps
# are cache hits. Exit codes: 0 ok, 1 a step failed, 3 the evaluation gate blocked deployment.
name: {_q("ftpipe: " + name)}

on:
  schedule:
{cron_lines}
  workflow_dispatch:
    inputs:
      force:
        description: Rerun every step, cached or not
        type: boolean
        default: false

concurrency:
  group: {_q("ftpipe-" + name)}
  cancel-in-progress: false

permissions:
  contents: read

jobs:
  run:
    name: {_q("ftpipe run " + rel)}
    runs-on: {runs_on}
    timeout-minutes: 360
    env:
      FTPIPE_PIPELINE: {_q(rel)}
      FTPIPE_STORE: {_q(store_rel)}
      FTPIPE_FORCE: ${{{{ inputs.force || false }}}}
      PYTHONUNBUFFERED: "1"
    steps:
      - uses: actions/checkout@v5
        with:
          persist-credentials: false  # the job token does not stay in .git/config for later steps

      - uses: actions/setup-python@v6
        with:
          python-version: {_q(python)}

      - name: Install ftpipe
        run: |
          python -m pip install --upgrade pip
{torch}          python -m pip install {shlex.quote(spec)}
{backend_setup}
      - name: Restore the run store
        uses: actions/cache/restore@v5
        with:
          path: {store_rel}
          key: {key}-${{{{ github.run_id }}}}-${{{{ github.run_attempt }}}}
          restore-keys: |
            {key}-

      - name: Run the pipeline
        id: run
{run_env}        run: |
          args=(run "$FTPIPE_PIPELINE" --json)
          if [ "$FTPIPE_FORCE" = "true" ]; then args+=(--force); fi
          set +e
          ftpipe "${{args[@]}}" > ftpipe-run.json
          code=$?
          set -e
          echo "exit_code=$code" >> "$GITHUB_OUTPUT"
          ftpipe schedule summary "$FTPIPE_PIPELINE" --result ftpipe-run.json --outputs "$GITHUB_OUTPUT" \\
            >> "$GITHUB_STEP_SUMMARY" || true
          case "$code" in
            0) ;;
            3) echo "::error title=ftpipe: gate blocked::the evaluation gate blocked deployment of {name} (see the run summary)" ;;
            4) echo "::error title=ftpipe: locked::another run of {name} holds the run store's lock" ;;
            *) echo "::error title=ftpipe: run failed::ftpipe run exited with $code (see the log above)" ;;
          esac
          exit "$code"

      - name: Save the run store
        if: always() && steps.run.outputs.exit_code != ''
        uses: actions/cache/save@v5
        with:
          path: {store_rel}
          key: {key}-${{{{ github.run_id }}}}-${{{{ github.run_attempt }}}}

      - name: Upload the run record
        if: always() && steps.run.outputs.run_dir != ''
        uses: actions/upload-artifact@v6
        with:
          name: ftpipe-run-{name}
          path: ${{{{ steps.run.outputs.run_dir }}}}
          if-no-files-found: ignore
"""
    return Workflow(text, crons, [r.name for r in refs], name, rel, store_rel)


# --------------------------------------------------------------------------- crontab


@dataclass(frozen=True)
class CronEntry:
    lines: list[str]  # comments, an optional CRON_TZ line, then one entry per cron expression
    crons: list[str]
    log: str
    lock: str
    secrets: list[str]


def ftpipe_command() -> list[str]:
    exe = shutil.which("ftpipe")
    if exe:
        return [str(Path(exe).resolve())]
    return [sys.executable, "-c", "from ftpipe.cli import run_cli; run_cli()"]


def crontab_entry(
    path: Path, loaded: Any, *, log: Path | None = None, env_file: Path | None = None, machine_tz: str | None = None
) -> CronEntry:
    """Crontab line(s) running the pipeline on its schedule, never overlapping (flock -n)."""
    sched = _scheduled(loaded, path)
    name = loaded.pipeline.name
    pipe = path.resolve()
    from ftpipe.store_location import locate_store

    cron_dir = locate_store(pipe.parent, environ=False).path / "cron"
    log = (log or cron_dir / f"{name}.log").resolve()
    lock = cron_dir / f"{name}.lock"
    comments = [
        f"# ftpipe: run pipeline {name} on its schedule ({sched.cron}, {sched.timezone}); "
        "a run that finds the previous one still going exits 4 without starting"
    ]
    tz_line = None
    try:
        crons = to_zone(sched.cron, sched.timezone, machine_tz, where="cron")
    except ScheduleError:
        crons = [sched.cron]
        tz_line = f"CRON_TZ={sched.timezone}"
        comments.append(
            f"# CRON_TZ makes cronie (Fedora, RHEL, Arch) read the times in {sched.timezone}; "
            "Debian/Ubuntu cron ignores it and uses the machine's zone"
        )
    refs = env_refs(loaded.doc.data if loaded.doc is not None else {})
    needed = [r.name for r in refs if r.default is None]
    if needed and env_file is None:
        comments.append(
            f"# needs {', '.join(needed)} in the environment: set them above this line in the "
            "crontab (NAME=value) or pass --env-file"
        )
    cmd = " ".join(shlex.quote(a) for a in ftpipe_command())
    dirs = " ".join(shlex.quote(str(d)) for d in dict.fromkeys([cron_dir, log.parent]))
    parts = [f"cd {shlex.quote(str(pipe.parent))}", f"mkdir -p {dirs}"]
    if env_file is not None:
        parts.append(f"set -a && . {shlex.quote(str(env_file.resolve()))} && set +a")
    run = (
        f"{{ date -u; flock -n -E 4 {shlex.quote(str(lock))} {cmd} run {shlex.quote(pipe.name)} --json "
        f'|| echo "ftpipe: exit $?"; }} >> {shlex.quote(str(log))} 2>&1'
    )
    entries = [f"{c} {' && '.join(parts + [run])}" for c in crons]
    for e in entries:
        if "%" in e:  # cron turns % into a newline
            raise ScheduleError(f"a path contains '%', which crontab treats as a newline: {e}")
    lines = comments + ([tz_line] if tz_line else []) + entries
    return CronEntry(lines, crons, str(log), str(lock), [r.name for r in refs])


# --------------------------------------------------------------------------- run summaries


def run_summary_markdown(result: dict, record: dict | None, report_md: str | None, pipeline_rel: str) -> str:
    """The Markdown a scheduled run appends to $GITHUB_STEP_SUMMARY."""
    code = result.get("exit_code")
    status = (record or {}).get("status") or result.get("status") or "unknown"
    icon = {0: "✅", 3: "■", 130: "⏹"}.get(code if isinstance(code, int) else -1, "❌")
    head = f"## {icon} ftpipe: {result.get('pipeline') or pipeline_rel} — {status} (exit {code})"
    lines = [head, ""]
    if code == 3:
        reason = next(
            (s.get("summary") for s in (record or {}).get("steps", {}).values() if s.get("status") == "blocked"), None
        )
        lines += [f"> **The evaluation gate blocked deployment.** {reason or ''}".rstrip(), ""]
    if result.get("up_to_date"):
        lines += ["Up to date: every step's inputs are unchanged, nothing ran.", ""]
    if record:
        lines += [
            f"Run `{record.get('run_id')}` · executor `{record.get('executor')}` · "
            f"{record.get('duration_s') or 0:.1f}s",
            "",
            "| step | status | time | summary |",
            "|---|---|---|---|",
        ]
        for sid, s in record.get("steps", {}).items():
            dur = f"{s['duration_s']:.1f}s" if s.get("duration_s") is not None else ""
            text = (s.get("error") or s.get("summary") or s.get("reason") or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {sid} | {s.get('status')} | {dur} | {text[:200]} |")
        lines.append("")
    elif result.get("error"):
        lines += [f"```\n{result['error']}\n```", ""]
    if report_md:
        lines += ["### Evaluation", "", report_md.strip(), ""]
    return "\n".join(lines) + "\n"
