"""``bodydouble audit verify|show``, ``bodydouble provenance verify TAKE``, ``bodydouble adapters retire NAME``.

They run on the server's machine (they read its audit log, its takes and its adapters folder), with the
server's settings: ``--config`` (default: the installer's config when there is one), or the flags.
Importing this module stays cheap: the work is imported when a command runs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def register(commands) -> None:
    commands.add("audit", "the server's audit log: verify the hash chain, show what was done", _usage("audit"))
    group = commands.group("audit")
    p = group.add("verify", "check the chain; name the first line changed, removed or reordered (exit 1 if any)",
                  cmd_audit_verify)
    _settings_flags(p)
    p.add_argument("--head", help="SEQ:HASH (or HASH) recorded elsewhere: also catch lines cut from the end")
    p.add_argument("--json", action="store_true")
    p = group.add("show", "the log's events, filtered (a job's outcome follows its request)", cmd_audit_show)
    _settings_flags(p)
    p.add_argument("--character", help="character name (glob, any case)")
    p.add_argument("--shot", help="shot name (glob)")
    p.add_argument("--user", help="user name (glob)")
    p.add_argument("--adapter", help="adapter name (glob)")
    p.add_argument("--since", help="from this date or time (ISO, UTC: 2026-12-01 or 2026-12-01T10:00)")
    p.add_argument("--until", help="up to this date or time (inclusive)")
    p.add_argument("--json", action="store_true", help="one JSON object per line, as logged")

    commands.add("provenance", "C2PA provenance of takes", _usage("provenance"))
    p = commands.group("provenance").add("verify", "check every frame of a take against its C2PA manifest "
                                         "(exit 1 if any fails)", cmd_provenance_verify)
    p.add_argument("take", help="the take folder (holding take.json)")
    _settings_flags(p)
    p.add_argument("--trust-anchors", help="PEM of the CA(s) to trust (default: the server's trust_anchors, else "
                   "its local signing CA)")
    p.add_argument("--json", action="store_true")

    p = commands.group("adapters").add("retire", "withdraw an adapter: refused from now on, listed as retired, "
                                       "audited; its takes stay traceable", cmd_adapters_retire)
    p.add_argument("name", help="the adapter's folder name")
    p.add_argument("--reason", required=True, help="why (kept in the adapter folder and the audit log)")
    _settings_flags(p)
    p.add_argument("--adapters", help="adapters folder (default: the server's)")


def _usage(name: str):
    def run(args) -> int:
        print(f"usage: bodydouble {name} ACTION ... (see bodydouble {name} --help)", file=sys.stderr)
        return 2
    return run


def _settings_flags(p) -> None:
    p.add_argument("--config", help="the server's TOML settings (default: the installer's, if any)")
    p.add_argument("--audit-log", help="the audit log (default: the server's audit_log)")


def _config(args):
    from bodydouble_server.workstation.locations import server_config_path

    from ..config import ServerConfig

    path = args.config
    if path is None:
        default = server_config_path()
        path = default if default.is_file() else None
    return ServerConfig.load(path, audit_log=getattr(args, "audit_log", None), adapters=getattr(args, "adapters", None))


def cmd_audit_verify(args) -> int:
    from . import audit

    log = Path(_config(args).audit_log)
    if not audit.segments(log):
        print(f"no audit log at {log}", file=sys.stderr)
        return 1
    result = audit.verify(log, expect_head=args.head)
    if args.json:
        print(json.dumps({"ok": result.ok, "log": str(log), "files": [str(f) for f in result.files],
                          "lines": result.lines, "head": f"{result.head_seq}:{result.head_hash}",
                          "problem": None if result.ok else {**result.problem.__dict__, "file": str(result.problem.file)}}))
    elif result.ok:
        print(f"OK: {result.lines} lines in {len(result.files)} file(s), chain intact\n"
              f"head {result.head_seq}:{result.head_hash}  (keep this somewhere the log's writers cannot reach; "
              "compare later with --head)")
    else:
        print(f"BROKEN: {result.problem}\n({result.lines} lines verified before it)", file=sys.stderr)
    return 0 if result.ok else 1


def cmd_audit_show(args) -> int:
    from . import audit

    log = Path(_config(args).audit_log)
    events = audit.show(log, character=args.character, shot=args.shot, user=args.user, adapter=args.adapter,
                        since=args.since, until=args.until)
    for event in events:
        print(json.dumps(event, sort_keys=True) if args.json else _event_line(event))
    if not args.json:
        print(f"{len(events)} event(s) in {log}", file=sys.stderr)
    return 0


def _event_line(e: dict) -> str:
    kind = e.get("event", "?")
    head = f"{e.get('seq', '?'):>7} {e.get('time', '')[:19]} {kind:<8}"
    if kind == "submit":
        adapters = ",".join(f"{a.get('name')}({a.get('character', '')})" for a in e.get("adapters") or []) or "-"
        verdict = e.get("decision", "")
        if verdict == "refused":
            verdict += f" [{e.get('rule') or e.get('code')}] {e.get('message', '')}"
        return (f"{head} {e.get('job') or '-':<20} {e.get('user', '?')} {e.get('operation', '')} {adapters} "
                f"shot {e.get('shot') or '-'} frames {e.get('frames', '')} seed {e.get('seed', '')}: {verdict}")
    if kind == "outcome":
        return (f"{head} {e.get('job', ''):<20} {e.get('outcome', '')} {len(e.get('frames_sha256') or {})} frame(s) "
                f"{e.get('take_dir') or ''}{'  ' + e['error'] if e.get('error') else ''}")
    if kind == "retire":
        return f"{head} {e.get('adapter', '')} ({e.get('character', '')}) by {e.get('by', '')}: {e.get('reason', '')}"
    return f"{head} " + ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("seq", "time", "event", "prev", "hash"))


def cmd_provenance_verify(args) -> int:
    from .provenance import verify_take
    from .rules import Policy

    anchors = Path(args.trust_anchors) if args.trust_anchors else Policy(_config(args)).trust_anchors()
    check = verify_take(Path(args.take), anchors)
    if args.json:
        print(json.dumps(check.to_dict(), indent=2))
    else:
        for problem in check.problems:
            print(f"FAIL take: {problem}")
        for item in check.files:
            print(f"{'OK  ' if item.ok else 'FAIL'} {Path(item.path).name}: {item.state}"
                  + ("" if item.ok else "; " + "; ".join(item.problems)))
        print(f"{'verified' if check.ok else 'NOT verified'}: {sum(f.ok for f in check.files)}/{len(check.files)} "
              f"files{' against ' + str(anchors) if anchors else ''}", file=sys.stderr)
    return 0 if check.ok else 1


def cmd_adapters_retire(args) -> int:
    from .rules import Policy

    record = Policy(_config(args)).retire(args.name, args.reason)
    print(f"retired {record['adapter']} ({record['character'] or 'no character'}): {record['reason']} "
          f"(audit line {record['audit_seq']})")
    return 0
