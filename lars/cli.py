"""The `lars` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lars.core.flavors import FLAVORS
from lars.parity.migrate import FRAMEWORKS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lars", description="One LARS, every framework.")
    commands = parser.add_subparsers(dest="command", required=True)
    parity = commands.add_parser("parity", help="run every flavor on every available backend")
    parity.add_argument("--out", type=Path, default=Path("reports"), help="report folder")
    parity.add_argument("--flavor", action="append", choices=list(FLAVORS),
                        help="only these flavors (repeatable; default: all)")
    parity.add_argument("--peers", action="store_true",
                        help="also run the installed peer libraries (optax.lars, pytorch_optimizer.LARS, "
                             "TF Model Garden's LARS, mxnet.optimizer.LARS), each in its flavor")
    parity.add_argument("--config", type=Path, default=None,
                        help="hyperparameter file (TOML) for the training problem (default: the shipped "
                             "MLPerf ResNet-50 LARS hyperparameters)")
    parity.add_argument("--no-training", action="store_true", help="skip the training problem")
    merge = commands.add_parser("merge", help="merge parity reports made in several environments")
    merge.add_argument("parts", type=Path, nargs="+", help="report folders to merge")
    merge.add_argument("--out", type=Path, default=Path("reports"), help="report folder")
    migrate = commands.add_parser("migrate", help="convert a saved optimizer state to another framework")
    migrate.add_argument("src", type=Path, help="state file saved by the source framework's adapter")
    migrate.add_argument("--from", dest="source", required=True, choices=FRAMEWORKS, help="source framework")
    migrate.add_argument("--to", dest="target", required=True, choices=FRAMEWORKS, help="target framework")
    migrate.add_argument("--out", type=Path, required=True, help="the state file to write for the target")
    migrate.add_argument("--names", type=Path, help="name map (TOML [tensors]: source name = target name "
                         "or { name, axes }); unmapped tensors keep their names")
    migrate.add_argument("--params", type=Path, help="the target's parameters (.npz by name): the "
                         "migrated state must fit their names and shapes")
    diff = commands.add_parser("diff", help="how two LARS rules differ, measured on the same settings")
    diff.add_argument("a", help="a flavor name or a lars.toml file")
    diff.add_argument("b", help="a flavor name or a lars.toml file")
    diff.add_argument("--config", type=Path, help="hyperparameter file whose settings and schedule both "
                      "rules run with (default: a side's file, else common settings)")
    diff.add_argument("--steps", type=int, default=100, help="steps of each run (default 100)")
    diff.add_argument("--json", action="store_true", help="print the result as JSON")
    compare = commands.add_parser("compare", help="where two recorded runs (traces) part, and why")
    compare.add_argument("a", type=Path, help="a trace file (an adapter's recorder wrote it)")
    compare.add_argument("b", type=Path, help="the other trace file")
    compare.add_argument("--names", type=Path, help="name map (TOML [tensors], as for migrate): a's name "
                         "= b's name; unmapped tensors keep their names")
    compare.add_argument("--html", type=Path, help="also write an offline HTML page with per-layer plots")
    compare.add_argument("--json", action="store_true", help="print the result as JSON")
    vectors = commands.add_parser("vectors", help="language-neutral test vectors of the reference, "
                                  "and grading another implementation's results against them")
    verbs = vectors.add_subparsers(dest="verb", required=True)
    export = verbs.add_parser("export", help="write every flavor's vectors (JSON, and .npz beside)")
    export.add_argument("dir", type=Path, help="folder to write the vectors into")
    export.add_argument("--case", action="append", help="only these cases (repeatable; default: every "
                        "case with a fixed gradient stream)")
    export.add_argument("--dtype", action="append", choices=["float64", "float32"],
                        help="repeatable (default: float64)")
    export.add_argument("--steps", type=int, default=10, help="steps of each case (default 10, at most 100)")
    check = verbs.add_parser("check", help="grade results (one JSON per vector) with the tolerance policy")
    check.add_argument("dir", type=Path, help="the vectors' folder")
    check.add_argument("results", type=Path, help="folder of results, one STEM.json per vector STEM.json")
    for verb in (export, check):
        verb.add_argument("--flavor", action="append", choices=list(FLAVORS),
                          help="only these flavors (repeatable; default: all)")
    args = parser.parse_args(argv)
    if args.command == "vectors":
        return run_vectors(args)
    if args.command == "compare":
        return run_compare(args)
    if args.command == "migrate":
        return run_migrate(args)
    if args.command == "diff":
        return run_diff(args)
    if args.command == "merge":
        from lars.parity import report

        return report.merge(args.parts, args.out)
    return run_parity(args)


def run_parity(args: argparse.Namespace) -> int:
    """`lars parity`: the hyperparameter file is checked before anything runs or is written."""
    from lars.core.config import default_config, load_config
    from lars.core.errors import LarsError

    try:
        config = default_config() if args.config is None else load_config(args.config)
    except LarsError as exc:
        print(f"lars parity: {exc}\nlars parity: nothing was written", file=sys.stderr)
        return 2
    from lars.parity import report  # after the check: it needs the report's extras (rich)

    return report.main(args.out, args.flavor, peers=args.peers, config=config, training=not args.no_training)


def run_diff(args: argparse.Namespace) -> int:
    """`lars diff`: the rule, the defaults, the measurement and the advice (or `--json`)."""
    import json

    from lars.core.config import load_config
    from lars.core.errors import LarsError
    from lars.parity.diff import diff, text

    try:
        config = None if args.config is None else load_config(args.config)
        result = diff(args.a, args.b, config, args.steps)
    except (LarsError, ImportError) as exc:  # ImportError: the digits problem's scikit-learn
        print(f"lars diff: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1) if args.json else text(result))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """`lars compare`: exit status 0 when the runs agree, 1 when they part, 2 for a user error."""
    import json

    from lars.core.errors import LarsError
    from lars.core.trace import load_trace
    from lars.parity.compare import as_json, compare, text
    from lars.parity.migrate import load_name_map

    try:
        names = {} if args.names is None else {k: r.name for k, r in load_name_map(args.names).items()}
        result = compare(load_trace(args.a), load_trace(args.b), names, label_a=str(args.a),
                         label_b=str(args.b))
        if args.html is not None:
            from lars.parity.compare_page import write

            write(result, args.html)
    except (LarsError, ImportError) as exc:  # ImportError: --html needs matplotlib
        print(f"lars compare: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(as_json(result), indent=1) if args.json else text(result))
    return 0 if result.agree else 1


def run_vectors(args: argparse.Namespace) -> int:
    """`lars vectors export|check`: check's exit status is 0 when every graded vector passes."""
    from lars.conformance import vectors
    from lars.conformance.cases import CASES
    from lars.core.errors import LarsError

    try:
        if args.verb == "export":
            unknown = sorted(set(args.case or ()) - set(vectors.stream_cases()))
            if unknown or not 1 <= args.steps <= 100:
                raise vectors.VectorError(
                    f"--case {unknown[0]!r}: one of {', '.join(vectors.stream_cases())} (the cases with a "
                    "fixed gradient stream)" if unknown else f"--steps {args.steps}: from 1 to 100")
            paths = vectors.export(args.dir, args.flavor or FLAVORS, args.case or None,
                                   args.dtype or ["float64"], args.steps)
            print(f"lars vectors: {len(paths)} vectors ({len(args.flavor or FLAVORS)} flavors, "
                  f"{len(args.case or vectors.stream_cases())} of {len(CASES)} cases) in {args.dir}")
            return 0
        grades = vectors.check(args.dir, args.results, args.flavor)
    except LarsError as exc:
        print(f"lars vectors: {exc}", file=sys.stderr)
        return 2
    for g in grades:
        print(g.line())
    failed = sum(not g.passed for g in grades)
    print(f"{len(grades) - failed} of {len(grades)} vectors passed")
    return 1 if failed else 0


def run_migrate(args: argparse.Namespace) -> int:
    """`lars migrate`: every check first; on a failure, says why and writes nothing."""
    from lars.core.errors import LarsError
    from lars.core.state import load_state
    from lars.parity.migrate import load_name_map, migrate, read_parameter_shapes

    try:
        names = None if args.names is None else load_name_map(args.names)
        shapes = None if args.params is None else read_parameter_shapes(args.params)
        source = load_state(args.src)  # its buffer names: which map entries apply (row 29)
        saved = migrate(args.src, args.out, source=args.source, target=args.target, names=names,
                        shapes=shapes)
    except (LarsError, OSError) as exc:  # OSError: a disk that fills while writing
        print(f"lars migrate: {exc}\nlars migrate: nothing was written", file=sys.stderr)
        return 1
    # Count what the map did to this state's buffers, not the map's entries.
    used = {n: r for n, r in (names or {}).items() if n in source.state.momentum_buffers}
    unused = sorted(set(names or {}) - set(used))
    renamed = sum(1 for n, r in used.items() if r.name != n)
    transposed = sum(1 for r in used.values() if r.axes is not None)
    if unused:
        entries = "entry" if len(unused) == 1 else "entries"
        print(f"lars migrate: {len(unused)} map {entries} matched no buffer: {unused}", file=sys.stderr)
    print(f"{args.src} ({args.source}) -> {args.out} ({args.target}): step {saved.state.step}, "
          f"{len(saved.state.momentum_buffers)} buffers; map: {renamed} renamed, {transposed} transposed"
          + ("" if shapes is None else f"; fits {len(shapes)} parameters"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
