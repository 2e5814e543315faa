"""Mutation testing on demand (issue 23), one module or a list: ``python tests/mutate.py NAME...``.

Runs cosmic-ray (``pip install -e '.[mutation]'``) on each named module against ONLY
the test files listed for it in :data:`TARGETS`, niced (``nice -n 10``), one mutant at a
time, and prints killed / survived / timeouts / incompetent and each survivor's diff.
Not run by CI: a module takes minutes to an hour. docs/TESTING.md records the scores.

    python tests/mutate.py --list            the modules and their test files
    python tests/mutate.py kmem_audit cred   run two modules
    python tests/mutate.py --report cred     print the last run's result again
    python tests/mutate.py --before cred     without tests/test_mutants_*.py (the "before" score)
    python tests/mutate.py --survivors cred  run only the last run's survivors again (after adding tests)

A module's source may be ``{"file": F, "only": ["Class.method", "Class", "function", "CONSTANT"]}``:
then only the mutants inside those definitions (or module-level assignments) run; the others
are recorded SKIPPED in the session database before ``cosmic-ray exec`` and reported as
left out, not killed (:func:`outside_only`).

cosmic-ray mutates the source file IN PLACE while a test command runs, and restores it
after each mutant. So: a clean file (``git diff`` empty) is required before the run,
do not edit or commit that file while it runs, and do not run other tests from the
same checkout meanwhile (they would import the mutant of the moment: use a clone). After
the run the file is checked against git (restored from git, with a warning, if a killed
run left a mutant).
Work files (config, session database, summary.json, history.jsonl) go to ``.mutation/NAME/``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: module name -> (source file or files, test files that cover it). Only these tests run per
#: mutant; a test file that does not exist yet is left out. Smallest and least shared first.
TARGETS: dict[str, tuple[str | list[str] | dict, list[str]]] = {
    "cred": ("kstatpy/cred.py", ["tests/test_mutants_cred.py", "tests/test_vmm_privilege.py"]),
    "kmem_audit": ("kstatpy/kmem_audit.py", ["tests/test_kmem_audit.py", "tests/test_mutants_kmem_audit.py"]),
    "safepath": ("kstatpy/safepath.py", ["tests/test_safe_paths.py", "tests/test_mutants_safepath.py"]),
    # test_fair_sharing's three slot-losing tests only (its quota and idle-timeout ones are
    # server_limits' and the server's: 14 s a run, 4 s without them).
    "session": ("kstatpy/session.py", ["tests/test_session.py", "tests/test_packed_results.py", *(
        f"tests/test_fair_sharing.py::test_{t}" for t in (
            "idle_connection_is_told_etimedout_and_closed", "one_byte_per_tick_half_frame_is_cut_at_the_frame_timeout",
            "a_client_that_does_not_read_its_replies_loses_its_slot")), "tests/test_mutants_session.py"]),
    # The attach-error tests of test_provider_system_raw never reach a layout (3.6 s a run).
    "raw": ("kstatpy/raw.py", [*(f"tests/test_provider_system_raw.py::test_{t}" for t in (
        "layout_sizes_and_offsets_are_illumos_lp64", "layout_lookup_is_kstat8s_digit_free_prefix_match",
        "pack_wraps_to_the_member_width", "fake_cpu_stat_equals_the_named_view", "live_cpu_stat_equals_the_named_view",
        "fake_sysinfo_vminfo_var", "kstat_prints_raw_kstats_through_kstatd")), "tests/test_mutants_raw.py"]),
    "kstat_rate": ("kstatpy/cli/kstat_rate.py", ["tests/test_mutants_kstat_rate.py", "tests/test_cli_rate.py"]),
    # Not test_mdb's crash fixture (a real kstatd panicking, 12 s a run) nor test_root_files' hostile JSON
    # (four kstatpy-mdb runs): test_mutants_crashdump builds, writes and loads dumps of real traps and
    # hostile files in-process; of kstatpy-mdb's own runs only the bad and symlinked files (eight runs).
    "crashdump": ("kstatpy/crashdump.py", ["tests/test_mdb.py::test_bad_files_exit_3_and_usage_2",
                  "tests/test_root_files.py::test_mdb_refuses_a_symlinked_dump_and_a_huge_one",
                  "tests/test_mutants_crashdump.py"]),
    # In-process: test_lockorder and test_deadman; not test_lockorder_kstatd (a kstatd per test).
    "lockorder": ("kstatpy/lockorder.py", ["tests/test_lockorder.py", "tests/test_deadman.py",
                                           "tests/test_mutants_lockorder.py"]),
    # In-process: test_deadman, test_lockorder (the race harness's deadman) and test_schedule's two
    # deadlock reports (thread_stack); not test_lockorder_kstatd (a kstatd per test: 21 s a run) nor
    # test_schedule's other seven (its 5 s stall test and the passing schedules: no report).
    "deadman": ("kstatpy/deadman.py", ["tests/test_deadman.py", "tests/test_lockorder.py", *(
        f"tests/test_schedule.py::test_{t}" for t in (
            "8149_without_the_checker_is_found_as_a_deadlock_and_replays",
            "the_cycle_through_a_shared_ks_lock_is_found_as_a_three_thread_deadlock")), "tests/test_mutants_deadman.py"]),
    # In-process (kstat_open_chain: the chain's own ioctl layer answers SELECT) and a fake kstatd
    # for the wire checks; not test_select's kstatd-fixture tests nor test_cli_stuck (a kstatd with
    # --read-timeout 1 per test: test_mutants_client_select drives ioctl_past_stuck in-process).
    "client_select": ("kstatpy/client_select.py", [*(f"tests/test_select.py::test_{t}" for t in (
        "golden_cases_select_equals_whole_chain", "select_reads_only_what_matches",
        "select_answers_kid_order_and_filters", "select_prev_snaptime_and_failed_reads",
        "select_refuses_regexes_and_the_client_matches_them_itself", "client_refuses_an_empty_selector",
        "select_too_big_for_kstatd_is_selected_by_the_client", "select_on_an_old_server_falls_back_to_the_chain",
        "select_past_the_reply_budget_reads_the_rest", "select_races_with_delete_one_hold_at_a_time")),
        "tests/test_client_malformed.py", "tests/test_client_reply_fuzz.py::test_fuzzed_results_are_protocol_errors_or_well_typed[select]",
        "tests/test_select.py::test_random_selectors_select_equals_whole_chain", "tests/test_mutants_client_select.py"]),
    # Not test_epcache's pip installs (13 s a run: 80 min a module); test_mutants_epcache reads and
    # writes real cache files in-process instead.
    "epcache": ("kstatpy/epcache.py", [*(f"tests/test_epcache.py::test_{t}" for t in (
        "declared_modules_skip_the_import", "fingerprint_sees_a_new_dist_info", "cache_off",
        "cache_file_round_trip_and_malformed_files")), "tests/test_mutants_epcache.py"]),
    # test_kmem_audit, test_memory and test_lifetime reach the heap too but take 18 s a run (2 s without them).
    "kmem": ("kstatpy/kmem.py", ["tests/test_kmem.py", "tests/test_escaped_mutations.py", "tests/test_mutants_kmem.py"]),
    # In-process tests only (the chain's own ioctl layer runs SELECT): not test_select's kstatd-fixture tests (the
    # same matching in a subprocess, 30 s a run with the fixture's teardown) nor test_cli_select's two interval
    # tests (one second of sleep each, no selection of their own); the hypothesis comparison last (2 s).
    "select": ("kstatpy/select.py", ["tests/test_cli_args.py", *(f"tests/test_select.py::test_{t}" for t in (
        "globs_match_in_polynomial_time", "globs_agree_with_fnmatch_on_stars_and_question_marks",
        "golden_cases_select_equals_whole_chain", "bad_regex_after_output_prints_the_same_prefix",
        "select_reads_only_what_matches", "select_answers_kid_order_and_filters", "select_prev_snaptime_and_failed_reads",
        "select_refuses_regexes_and_the_client_matches_them_itself", "select_malformed_arguments",
        "select_limits_are_inclusive", "client_refuses_an_empty_selector",
        "select_too_big_for_kstatd_is_selected_by_the_client", "select_on_an_old_server_falls_back_to_the_chain",
        "select_past_the_reply_budget_reads_the_rest")), *(f"tests/test_cli_select.py::test_{t}" for t in (
        "selector_matrix", "duplicates_across_selectors_print_twice_grouped_by_selector",
        "statistic_filter_suppresses_whole_instance", "statistic_case_sensitive_glob",
        "class_pattern_combines_with_operands", "quiet_prints_nothing_but_sets_status", "parseable_list_values_only",
        "only_selected_kstats_are_read", "failed_read_keeps_instance_with_crtime_and_class",
        "quiet_with_timestamps_still_prints_them", "header_widths_count_bytes_like_c")),
        "tests/test_fairness.py::test_the_glob_cache_is_bounded_and_reused",
        "tests/test_select.py::test_select_races_with_delete_one_hold_at_a_time",
        "tests/test_select.py::test_random_selectors_select_equals_whole_chain", "tests/test_mutants_select.py"]),
    "vmm": (["providers/vmm/ops.py", "providers/vmm/provider.py"],  # teardown order and privileges
            ["tests/test_vmm_privilege.py", "tests/test_vmm_lifecycle.py", "tests/test_mutants_vmm.py"]),
    "vmm_state": ("providers/vmm/state.py",
                  ["tests/test_vmm_lifecycle.py", "tests/test_vmm_privilege.py", "tests/test_mutants_vmm_state.py"]),
    # The fake-host tests that reach cpustat.py, in-process (1.5 s of CPU a run). Left out: the
    # live-host tests (each attaches the whole provider to the real /proc: 2.6 s of CPU a run with
    # them), the live 3 s measurement test_cpu_time_adds_up_to_elapsed_time, and the fd stress
    # test_kept_open_files_are_closed_only_after_their_readers (3 s; it races links, not CPUs).
    "cpustat": ("providers/system/cpustat.py", [
        "tests/test_provider_system_clock.py", "tests/test_mutants_cpustat.py",
        *(f"tests/test_provider_system_cpu.py::test_{t}" for t in (
            "fake_cpu_sys_vm_and_cpu_stat_exact", "time_linux_loses_goes_to_idle", "off_line_cpu_keeps_its_last_values",
            "fake_crtime_is_the_fake_boot")),
        *(f"tests/test_provider_system_fixes.py::test_{t}" for t in (
            "tlb_shootdowns_are_not_counted_twice", "pswitch_from_ctxt_without_schedstat")),
        *(f"tests/test_provider_system.py::test_{t}" for t in (
            "fake_tree_values_follow_the_mapping", "cpu_goes_and_comes_back")),
        "tests/test_provider_system_raw.py::test_fake_cpu_stat_equals_the_named_view"]),
    # The tests that read cpu_info, fake host and live; not test_provider_system_tools' tool runs.
    "cpu": ("providers/system/cpu.py", ["tests/test_mutants_cpu.py", *(f"tests/test_provider_system.py::test_{t}" for t in (
        "cpu_info_matches_cpuinfo", "fake_tree_values_follow_the_mapping", "cpuid_signature_from_family_model_stepping",
        "offline_cpu_state_changes_state_begin", "cpu_goes_and_comes_back"))]),
    # test_exporter's in-process tests only (11.5 s a run with its kstatd ones, at load 8). Left out:
    # test_prometheus_e2e (a real Prometheus), test_scrapes_while_vms_come_and_go (a 5.6 s churn stress),
    # the tests that start a kstatd (CLI wiring, usage errors, the panic paths: test_mutants_exporter
    # scrapes a use-after-free in-process instead).
    "exporter": ("kstatpy/exporter.py", [*(f"tests/test_exporter.py::test_{t}" for t in (
        "metric_names_follow_prometheus_conventions", "parse_options", "families_types_units_labels_and_zones",
        "select_limits_what_is_read", "a_slowloris_metrics_connection_is_closed_and_scrapes_go_on")),
        "tests/test_mutants_exporter.py"]),
    # The metrics server: the in-process slowloris tests, and test_exporter_http's kstatd (its paths).
    "exporter_http": ("kstatpy/exporter_http.py", [
        "tests/test_exporter.py::test_a_slowloris_metrics_connection_is_closed_and_scrapes_go_on",
        "tests/test_fairness.py::test_a_scrape_is_answered_during_a_slowloris_that_fills_every_slot",
        "tests/test_fairness.py::test_a_slowloris_that_sends_its_request_line_then_dribbles_headers_is_still_one",
        "tests/test_exporter_http.py", "tests/test_mutants_exporter_http.py"]),
    # Transport: only its caps and deadlines (frame and piece size caps, the timeout's validation,
    # the whole-request deadline); the connect and trust path is safepath's and cred's. Tests: the
    # client-side ones of those (in-process or a fake server); not test_client's kstatd reads, the CLI
    # subprocess tests of test_client_contract and test_hostile_server (0.4 s each), test_pieces' stress.
    "transport": ({"file": "kstatpy/transport.py", "only": [
        "DEFAULT_REQUEST_TIMEOUT", "MAX_REQUEST_TIMEOUT", "MAX_REPLY", "_CHUNK", "_MORE", "request_timeout",
        "SocketTransport._remaining", "SocketTransport._recv_exact", "SocketTransport._recv_body",
        "SocketTransport._recv_reply", "SocketTransport._timed_out", "_timeval"]}, [
        "tests/test_client.py::test_read_errors",
        *(f"tests/test_client_contract.py::test_{t}" for t in (
            "default_timeout_and_its_validation", "kstat_timeout_takes_what_libkstat_takes",
            "the_deadline_covers_the_whole_reply_not_each_recv")),
        "tests/test_hostile_server.py::test_client_refuses_a_reply_over_its_cap_without_allocating_it",
        "tests/test_hostile_server.py::test_a_large_reply_under_the_cap_is_read_whole",
        *(f"tests/test_pieces.py::test_{t}" for t in (
            "the_client_reassembles_pieces_from_any_server", "malformed_piece_sequences_are_eproto",
            "pieces_to_a_request_that_did_not_ask_are_eproto", "a_server_that_closes_mid_pieces_is_unavailable",
            "one_deadline_covers_every_piece")),
        "tests/test_mutants_transport.py"]),
    # server.py's limits only: the connection caps and per-uid/zone quotas (admit, refuse,
    # release on close), the reply budget's use (_send parks a reply its reader does not take,
    # or closes the connection), the accept path's error handling (fd exhaustion, the spare
    # fd), the config's limit defaults (and BIG_BODY until main removed it). Not _short_slice
    # (--priv-slice asks for a time slice, it bounds nothing; test_priv_slice reads it from a
    # kstatd). Tests: test_mutants_server_limits (an in-process Kstatd), test_fair_sharing's
    # tests with another user (nobody) and the fd limit (a kstatd each); not its 256-socket
    # and zone tests (2 s: the in-process quota tests check the same edges), nor its timeout
    # tests (session's), nor test_server (6 s, reaches no limit).
    "server_limits": ({"file": "kstatpy/server.py", "only": [
        "FD_LOG_INTERVAL", "ServerConfig", "Kstatd._accept_loop", "Kstatd._refuse", "Kstatd._shed",
        "Kstatd._reopen_spare", "Kstatd._admit", "Kstatd._over_quota", "Kstatd._send", "Kstatd._close_session"]}, [
        *(f"tests/test_fair_sharing.py::test_{t}" for t in (
            "root_keeps_its_reserve_when_other_users_fill_the_rest",
            "every_refusal_counts_in_errors_ebusy_and_connections_refused",
            "clients_beyond_the_fd_limit_are_told_ebusy_and_the_log_stays_quiet")),
        "tests/test_mutants_server_limits.py"]),
}


def _tests(files: list[str]) -> list[str]:
    # The fast in-process tests/test_mutants_*.py first: with -x a mutant they kill costs seconds.
    # An entry may be a node id (tests/x.py::test_y): one test of a slow file.
    present = [f for f in files if (REPO / f.partition("::")[0]).is_file()]
    return sorted(present, key=lambda f: not Path(f).name.startswith("test_mutants_"))


def _pytest(files: list[str], timeout: float) -> list[str]:
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--timeout={int(timeout)}", *files]


def _sources(name: str) -> list[str]:
    source = TARGETS[name][0]
    if isinstance(source, dict):
        return [source["file"]]
    return [source] if isinstance(source, str) else list(source)


def _definitions(text: str) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """Qualified name -> (start, end) (line, column) span of every class, function and method
    (``Class.method``, nested ones ``outer.inner``) and every module-level assignment's name."""
    import ast

    spans: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}

    def span(node: ast.AST) -> tuple[tuple[int, int], tuple[int, int]]:
        return (node.lineno, node.col_offset), (node.end_lineno or node.lineno, node.end_col_offset or 0)  # type: ignore[attr-defined]

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                spans[prefix + node.name] = span(node)
                walk(node.body, f"{prefix}{node.name}.")
            elif not prefix and isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        spans[target.id] = span(node)

    walk(ast.parse(text).body, "")
    return spans


def outside_only(text: str, only: list[str], mutants: list[tuple[str, tuple[int, int]]]) -> list[str]:
    """The job ids of ``mutants`` ((job id, start (line, column))) that start outside every
    definition named in ``only`` (see :func:`_definitions`) of the module source ``text``.

    :raises ValueError: a name in ``only`` is not defined in the module (a typo would
        otherwise leave every mutant out silently).
    """
    spans = _definitions(text)
    unknown = [n for n in only if n not in spans]
    if unknown:
        raise ValueError(f"not defined in the module: {', '.join(unknown)}")
    keep = [spans[n] for n in only]
    return [job for job, start in mutants if not any(a <= tuple(start) < b for a, b in keep)]


def _skip_outside(db: Path, source: dict) -> int:
    # Record every mutant outside source["only"] as SKIPPED, as cosmic-ray's own filters do:
    # `cosmic-ray exec` then runs only the others. Returns how many were skipped.
    from cosmic_ray.work_db import WorkDB
    from cosmic_ray.work_db import use_db
    from cosmic_ray.work_item import WorkerOutcome
    from cosmic_ray.work_item import WorkResult

    with use_db(str(db), WorkDB.Mode.open) as wdb:
        mutants = [(item.job_id, item.mutations[0].start_pos) for item in wdb.work_items]
        skip = outside_only((REPO / source["file"]).read_text(), source["only"], mutants)
        wdb.set_multiple_results(skip, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
    return len(skip)


def _clean(sources: list[str]) -> bool:
    return subprocess.run(["git", "diff", "--quiet", "--", *sources], cwd=REPO, timeout=60).returncode == 0


def _annotations(path: Path) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The (start, end) (line, column) spans of every annotation in the module at ``path``."""
    import ast

    spans = []
    for node in ast.walk(ast.parse(path.read_text())):
        notes = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            notes = [a.annotation for a in (*args.posonlyargs, *args.args, *args.kwonlyargs) if a.annotation]
            notes += [a.annotation for a in (args.vararg, args.kwarg) if a is not None and a.annotation]
            notes += [node.returns] if node.returns else []
        elif isinstance(node, ast.AnnAssign):
            notes = [node.annotation]
        spans += [((n.lineno, n.col_offset), (n.end_lineno or n.lineno, n.end_col_offset or 0)) for n in notes]
    return spans


def summarize(db: Path, source: str | list[str] | dict) -> dict:
    """Counts and survivors of a finished session database.

    A survivor inside an annotation is counted apart (``annotations``): with
    ``from __future__ import annotations`` no annotation is evaluated at run time, so
    no test can kill it (mypy does). ``score_without_annotations`` leaves them out.
    """
    from cosmic_ray.work_db import WorkDB
    from cosmic_ray.work_db import use_db
    from cosmic_ray.work_item import TestOutcome
    from cosmic_ray.work_item import WorkerOutcome

    counts = {"mutants": 0, "killed": 0, "timeouts": 0, "survived": 0, "incompetent": 0, "pending": 0,
              "annotations": 0, "left_out": 0}  # fmt: skip
    survivors = []
    notes: dict[str, list] = {}
    with use_db(str(db), WorkDB.Mode.open) as wdb:
        counts["mutants"] = wdb.num_work_items
        for item, result in wdb.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:  # outside the module's "only" names
                counts["left_out"] += 1
            elif result.test_outcome == TestOutcome.KILLED:
                counts["timeouts" if result.output == "timeout" else "killed"] += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                counts["survived"] += 1
                m = item.mutations[0]
                spans = notes.setdefault(str(m.module_path), _annotations(REPO / m.module_path))
                if any(a <= tuple(m.start_pos) < b for a, b in spans):
                    counts["annotations"] += 1
                    continue
                survivors.append({"job": item.job_id, "file": str(m.module_path), "line": m.start_pos[0], "operator": m.operator_name,
                                  "occurrence": m.occurrence, "diff": result.diff})  # fmt: skip
            else:
                counts["incompetent"] += 1
        done = ("killed", "timeouts", "survived", "incompetent", "left_out")
        counts["pending"] = counts["mutants"] - sum(counts[k] for k in done)
    scored = counts["killed"] + counts["timeouts"] + counts["survived"]
    counts["score"] = round(100 * (counts["killed"] + counts["timeouts"]) / scored, 1) if scored else None
    runtime = scored - counts["annotations"]
    counts["score_without_annotations"] = (
        round(100 * (counts["killed"] + counts["timeouts"]) / runtime, 1) if runtime else None
    )
    survivors.sort(key=lambda s: (s["file"], s["line"]))
    return {"module": source, "counts": counts, "survivors": survivors}


def report(name: str, summary: dict) -> None:
    c = summary["counts"]
    left = f" ({c['left_out']} left out: outside {', '.join(summary['module']['only'])})" if c.get("left_out") else ""
    module = summary["module"]["file"] if isinstance(summary["module"], dict) else summary["module"]
    print(f"{name} ({module}): {c['mutants']} mutants{left}, killed {c['killed']}, timeouts {c['timeouts']}, "
          f"survived {c['survived']}, incompetent {c['incompetent']}, pending {c['pending']}: {c['score']}% killed; "
          f"{c.get('annotations', 0)} of the survivors in annotations, without them "
          f"{c.get('score_without_annotations')}% killed")  # fmt: skip
    for s in summary["survivors"]:
        print(f"--- survived: {s.get('file', '')}:{s['line']} {s['operator']} #{s['occurrence']} ({s['job']})")
        print((s["diff"] or "").rstrip())


def _mutants(db: Path) -> list[tuple]:
    # Every mutant of a session database: where it is and what it does, sorted.
    import sqlite3

    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT module_path, operator_name, occurrence, start_pos_row, start_pos_col, end_pos_row, "
                           "end_pos_col FROM mutation_specs").fetchall()  # fmt: skip
    return sorted(rows)


def run(name: str, survivors: bool = False, before: bool = False) -> int:
    """Mutate module ``name``: every mutant, or (``survivors``) again only the last run's survivors.

    A survivors run keeps the last run's database: its killed mutants stay killed (tests
    were only added), its survivors are run again with the current test files. It refuses
    when the module's mutants are not the same as then (the source changed: run it all).
    """
    sources, files = _sources(name), _tests(TARGETS[name][1])
    if before:  # the score before the survivors' own tests were written
        files = [f for f in files if not Path(f).name.startswith("test_mutants_")]
    source: str | list[str] | dict = sources[0] if len(sources) == 1 else sources
    if isinstance(TARGETS[name][0], dict):
        source = TARGETS[name][0]
    work = REPO / ".mutation" / name
    work.mkdir(parents=True, exist_ok=True)
    if not _clean(sources):
        print(f"mutate: {' '.join(sources)}: uncommitted changes; cosmic-ray mutates in place: commit or stash first",
              file=sys.stderr)  # fmt: skip
        return 2
    db = work / "session.sqlite"
    cr = [sys.executable, "-m", "cosmic_ray.cli"]
    if survivors:
        if not db.exists():
            print(f"mutate: {name}: no earlier run to take the survivors of", file=sys.stderr)
            return 2
        fresh = work / "check.sqlite"
        fresh.unlink(missing_ok=True)
        config = work / "config.toml"
        subprocess.run(["nice", "-n", "10", *cr, "init", str(config), str(fresh)], cwd=REPO, check=True, timeout=600)
        same = _mutants(fresh) == _mutants(db)
        fresh.unlink()
        if not same:
            print(f"mutate: {name}: the module's mutants changed since the last run; run it whole", file=sys.stderr)
            return 2
    # The unmutated tests must pass; their time sets each mutant's bound (5x, at least 60 s).
    t0 = time.monotonic()
    base = subprocess.run(["nice", "-n", "10", *_pytest(files, 600)], cwd=REPO, capture_output=True, text=True,
                          timeout=1200)  # fmt: skip
    took = time.monotonic() - t0
    if base.returncode:
        print(f"mutate: {name}: the tests fail without a mutant:\n{base.stdout[-3000:]}", file=sys.stderr)
        return 3
    timeout = max(60.0, 5 * took)
    command = shlex.join(_pytest(files, timeout))
    config = work / "config.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(sources[0] if len(sources) == 1 else sources)}\n"  # a string or a list: both are TOML
        f"timeout = {timeout:.0f}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(command)}\n"
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )
    print(f"mutate: {name}: baseline {took:.1f} s, bound {timeout:.0f} s per mutant; tests: {' '.join(files)}",
          flush=True)  # fmt: skip
    if survivors:
        import sqlite3

        again = [s["job"] for s in summarize(db, source)["survivors"]]
        with sqlite3.connect(db) as con:
            con.executemany("DELETE FROM work_results WHERE job_id = ?", [(j,) for j in again])
        print(f"mutate: {name}: running the {len(again)} survivors again", flush=True)
    else:
        db.unlink(missing_ok=True)
    try:
        if not survivors:
            subprocess.run(["nice", "-n", "10", *cr, "init", str(config), str(db)], cwd=REPO, check=True, timeout=600)
            if isinstance(source, dict):
                print(f"mutate: {name}: {_skip_outside(db, source)} mutants outside {', '.join(source['only'])} "
                      "left out", flush=True)  # fmt: skip
        exe = ["nice", "-n", "10", *cr, "exec", str(config), str(db)]
        subprocess.run(exe, cwd=REPO, check=True)  # bounded: cosmic-ray stops each mutant's tests at `timeout`
    finally:
        if not _clean(sources):
            print(f"mutate: WARNING: {' '.join(sources)} left mutated; restored from git", file=sys.stderr)
            subprocess.run(["git", "checkout", "--", *sources], cwd=REPO, check=True, timeout=60)
    summary = summarize(db, source)
    summary.update(date=time.strftime("%Y-%m-%d"), tool=_version(), tests=files, bound_s=round(timeout),
                   run="survivors" if survivors else "all")  # fmt: skip
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    with open(work / "history.jsonl", "a") as history:  # every run's counts, for docs/TESTING.md's before/after
        history.write(json.dumps({k: summary[k] for k in ("date", "tool", "tests", "bound_s", "run", "counts")}) + "\n")
    report(name, summary)
    return 0


def _version() -> str:
    from importlib.metadata import version

    return f"cosmic-ray {version('cosmic-ray')}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python tests/mutate.py", description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", metavar="NAME", help="modules to mutate (see --list)")
    ap.add_argument("--list", action="store_true", help="list the modules and their test files")
    ap.add_argument("--report", action="store_true", help="print the last run's result, run nothing")
    ap.add_argument("--before", action="store_true",
                    help="leave out tests/test_mutants_*.py: the score before them")  # fmt: skip
    ap.add_argument("--survivors", action="store_true",
                    help="run only the last run's survivors again, with the current test files")  # fmt: skip
    args = ap.parse_args(argv)
    if args.list or not args.modules:
        for name, (_source, files) in TARGETS.items():
            print(f"{name:12} {' '.join(_sources(name)):28} {' '.join(_tests(files))}")
        return 0
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        ap.error(f"unknown module(s): {', '.join(unknown)} (see --list)")
    status = 0
    for name in args.modules:
        if args.report:
            db = REPO / ".mutation" / name / "session.sqlite"
            last = json.loads((REPO / ".mutation" / name / "summary.json").read_text())
            report(name, summarize(db, last["module"]) if db.exists() else last)
        else:
            status = max(status, run(name, survivors=args.survivors, before=args.before))
    return status


if __name__ == "__main__":
    sys.exit(main())
