"""Command-line entry points, one per workflow stage. Rules call these; they hold no science.

    seqedit world           --config CFG --out-dir DIR
    seqedit fetch           --out FILE [--url URL --sha256 HEX] [--place PATH]
    seqedit subset          --records FILE --kind K --out FILE [--limit N] [--drop-unchanged]
    seqedit corpus          --records FILE --kind K --out TXT [--limit N]
    seqedit train-testbed   --config CFG --corpus TXT --out DIR
    seqedit check-knowledge --config CFG --model M --records FILE --kind K --out JSON
    seqedit stats           --config CFG --model M [--corpus TXT] --out FILE.pt
    seqedit edit            --config CFG --model M --stats FILE.pt --records FILE --kind K --out-dir DIR
                            [--restore-from ARCHIVE]
    seqedit archive         --runs results/<model>/edit --out ARCHIVE
    seqedit trace           --config CFG --model M --records FILE --kind K --out tracing.json
    seqedit prepare-model   --config CFG --out DIR [--download-dir DIR]
    seqedit known           --config CFG --model M --records FILE --kind K --out JSON --records-out FILE

CFG is a JSON/YAML file holding the config sections the stage needs. Errors end the
process with one line on stderr and exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from seqedit.core.solve import NumericalError
from seqedit.config import KnowledgeCheckConfig, ModelConfig, StatsConfig, build, read_config, section
from seqedit.repro import write_json


def cmd_world(args) -> None:
    from seqedit.data.world import WorldConfig, write_world

    cfg = read_config(args.config)
    world_cfg = build(WorldConfig, section(section(cfg, "data"), "synthetic"), "data.synthetic")
    write_world(world_cfg, args.out_dir)
    print(f"wrote the synthetic world to {args.out_dir}")


def cmd_fetch(args) -> None:
    from seqedit.data.fetch import FetchError, fetch

    place = args.place or args.out
    if not args.url:
        if not Path(args.out).is_file():
            raise FetchError(f"{place} is missing and no URL is configured ({args.url_setting}): place the file there")
        return
    try:
        fetch(args.url, args.out, args.sha256, progress=not args.quiet)  # keeps (and checks) an existing file
    except FetchError as err:
        raise FetchError(f"{err}; place the file at {place} instead") from None
    print(f"{args.out}: from {args.url}, sha256 checked" if args.sha256 else f"{args.out}: from {args.url}")


def cmd_subset(args) -> None:
    from seqedit.data.subset import write_subset

    n, dropped = write_subset(args.records, args.kind, args.out, args.limit, args.drop_unchanged)
    left_out = f" ({dropped} records whose target equals their true answer left out)" if args.drop_unchanged else ""
    print(f"wrote {n} records of {args.records} to {args.out}{left_out}")


def cmd_corpus(args) -> None:
    from seqedit.data.corpus import write_records_corpus

    summary = write_records_corpus(args.records, args.kind, args.out, args.limit)
    print(f"wrote the corpus of {args.records} to {args.out}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))


def cmd_train_testbed(args) -> None:
    from seqedit.data.corpus import read_corpus
    from seqedit.models.testbed import TestbedConfig, train_testbed

    cfg = read_config(args.config)
    tb = build(TestbedConfig, section(cfg, "testbed"), "testbed")
    lines = read_corpus(args.corpus)
    import torch

    torch.set_num_threads(tb.threads)  # testbed.threads, not the job's cores: the weights depend on it
    summary = train_testbed(lines, tb, args.out, progress=not args.quiet)
    write_json(Path(args.out) / "training_summary.json", summary)


def _load(cfg: dict, model_path: str):
    from seqedit.models.load import load_model

    mc = build(ModelConfig, section(cfg, "model"), "model")
    return load_model(model_path, dtype=mc.dtype, device=mc.device)


def _records(cfg: dict, path: str, kind: str, n: int | None = None):
    from seqedit.data import load_records

    return load_records(path, kind, limit=n)


def _generation_length(evaluation: dict) -> int:
    """Tokens each fluency generation reaches (prompt included); 0 when generation is off."""
    from seqedit.evaluate import GENERATION_DEFAULTS

    gen = {**GENERATION_DEFAULTS, **(evaluation.get("generation") or {})}
    return int(gen["max_length"]) if gen["n_records"] > 0 else 0


def cmd_check_knowledge(args) -> None:
    from seqedit.core.context import check_records_fit
    from seqedit.data.stream import union_of_streams
    from seqedit.knowledge import check_knowledge
    from seqedit.runner import RunConfig

    cfg = read_config(args.config)
    kc = build(KnowledgeCheckConfig, section(cfg, "knowledge_check"), "knowledge_check")
    run = build(RunConfig, section(cfg, "run"), "run")
    model, tok = _load(cfg, args.model)
    records = _records(cfg, args.records, args.kind)
    if run.n_edits > len(records):
        raise ValueError(f"run.n_edits ({run.n_edits}) exceeds the {len(records)} records in {args.records}")
    # every record some run will edit: the union of the seeds' streams
    records = union_of_streams(records, run.n_edits, cfg.get("seeds", [0]), run.shuffle)
    check_records_fit(model, tok, records)
    result = check_knowledge(model, tok, records, kc, batch_size=section(cfg, "evaluation").get("batch_size", 64))
    print(result["message"])
    write_json(args.out, result)
    if not result["passed"]:
        Path(args.out).unlink()
        raise SystemExit(
            f"knowledge check failed: {result['message']}; the model does not know enough of the facts to be "
            "edited (a testbed: train it longer with testbed.steps; the thresholds are knowledge_check)"
        )


def _reused(what: str, found: Path | None, lines: list[str], take) -> bool:
    """What `--reuse` found, one line per candidate; `take(found)` where one was made from the
    same inputs. True when taken."""
    for line in lines:
        print(f"{what}: {line}", file=sys.stderr)
    if found is None:
        return False
    take(found)
    print(f"{what} taken from {found}, made from the same inputs")
    return True


def cmd_stats(args) -> None:
    import torch

    from seqedit.core.stats import collect_second_moments
    from seqedit.data.texts import corpus_texts, dataset_texts, generated_texts
    from seqedit.models.arch import spec_for
    from seqedit.stats_reuse import copy_stats, find_reusable, stats_inputs

    cfg = read_config(args.config)
    sc = build(StatsConfig, section(cfg, "stats"), "stats")
    if not sc.layers:
        raise ValueError("stats.layers is empty: name the layers to collect")
    if args.corpus and sc.source != "corpus":
        raise ValueError(f"stats.source is '{sc.source}': --corpus is not used; drop it or set stats.source: corpus")
    if sc.source == "corpus" and not args.corpus:
        raise ValueError("stats.source is 'corpus': give the text file with --corpus")
    if args.texts_from and sc.source != "generated":
        print(f"--texts-from is not used: stats.source is '{sc.source}'", file=sys.stderr)
    # the statistics of another results folder, where they were summed from the same inputs
    inputs = stats_inputs(cfg, args.model, args.corpus, torch.get_num_threads())
    if args.reuse and _reused("statistics", *find_reusable(args.reuse, inputs, args.out),
                              lambda found: copy_stats(found, args.out)):
        return
    # the texts first: a missing corpus or dataset fails before the model is loaded
    if sc.source == "dataset":
        texts = dataset_texts(sc.dataset, sc.n_samples, sc.seed)
        origin = {"dataset": asdict(sc.dataset)}
    elif sc.source == "corpus":
        texts = corpus_texts(args.corpus, sc.n_samples, sc.seed)
        origin = {"corpus": str(args.corpus)}
    model, tok = _load(cfg, args.model)
    t0 = time.time()
    if sc.source == "generated":
        texts = None
        if args.texts_from:
            from seqedit.archive import archived_texts

            texts, found = archived_texts(args.texts_from, asdict(sc.generated), sc.n_samples, sc.seed, args.model)
            print(found, file=sys.stderr)
        origin = {"texts_from": str(args.texts_from)} if texts is not None else {}
        if texts is None:
            texts = generated_texts(model, tok, sc.generated, sc.n_samples, sc.seed, progress=not args.quiet)
        origin.update({"generated": asdict(sc.generated), "generation_seconds": round(time.time() - t0, 2),
                       "texts": texts})
    half = max(1, sc.n_samples // 2) if sc.convergence else None
    stats = collect_second_moments(model, tok, spec_for(model), texts, sc.layers, sc.max_length, sc.batch_size,
                                   progress=not args.quiet, half=half)
    stats.meta.update({**origin, "source": sc.source, "n_samples": sc.n_samples, "seed": sc.seed,
                       "seconds": round(time.time() - t0, 2), "inputs": inputs})
    stats.save(args.out)
    settled = ""
    if "convergence" in stats.meta:
        conv = stats.meta["convergence"]
        settled = (f"; from {conv['n_texts_half']} to {conv['n_texts']} texts E[kk^T] changes by at most "
                   f"{100 * conv['max_relative_change']:.2f} % (relative Frobenius norm)")
    print(f"layer statistics for layers {stats.layers} over {stats.meta['n_texts']} {sc.source} texts, "
          f"{stats.count} tokens in {stats.meta['seconds']} s{settled}")


def _add_capability_probe(eval_cfg: dict, model, tok, all_records, stream) -> None:
    """eval_cfg["capability"] built from `evaluation.capability` while the model is unedited."""
    from seqedit.evaluate.capability import build_probe

    probe = build_probe(eval_cfg.get("capability"), model, tok, all_records, stream, int(eval_cfg.get("batch_size", 64)))
    eval_cfg["capability"] = probe
    print(f"capability probe: {len(probe.facts)} held-out known facts, {len(probe.texts)} texts ({probe.text_source})")


def _restored(args, cfg: dict, stats) -> tuple[bool, dict]:
    """(restored, digests): the run's input digests, and whether --restore-from held a finished run
    with the same ones, now copied into --out-dir."""
    from seqedit.archive import input_digests, restore

    digests = input_digests(cfg, args.model, stats, args.records)
    if not args.restore_from:
        return False, digests
    done, why = restore(args.restore_from, args.out_dir, digests)
    print(f"{'restored' if done else 'not restored'}: {why}", file=sys.stderr)
    return done, digests


def cmd_archive(args) -> None:
    from seqedit.archive import pack, pack_texts

    packed, skipped = pack(args.runs, args.out)
    for run in skipped:
        print(f"skipped {run}: not finished, or run without inputs.json", file=sys.stderr)
    print(f"{len(packed)} runs packed into {args.out}")
    stats = Path(args.stats or Path(args.runs).parent / "stats" / "mom2.pt")
    model = Path(args.model or Path(args.runs).parent / "model")
    if stats.is_file() and model.exists():
        texts = pack_texts(stats, model, args.out)
        print(f"the statistics' generated texts written to {texts}" if texts else
              f"{stats} holds no generated texts to archive (other source, or collected before it kept them)")


def cmd_edit(args) -> None:
    from seqedit.archive import INPUTS
    from seqedit.core.context import check_records_fit
    from seqedit.core.stats import LayerStats
    from seqedit.data.stream import edit_stream
    from seqedit.evaluate import prepare_evaluation
    from seqedit.methods.base import check_edit_dtype
    from seqedit.models.arch import spec_for
    from seqedit.registry import build_config, get_method
    from seqedit.repro import seed_everything
    from seqedit.runner import RunConfig, run_sequential

    cfg = read_config(args.config)
    method = section(cfg, "method")
    if "name" not in method:
        raise ValueError("config section 'method' needs a 'name'")
    config_cls, editor_cls = get_method(method["name"])
    hp = build_config(config_cls, method.get("hparams") or {}, f"hparams.{method['name']}")
    run = build(RunConfig, section(cfg, "run"), "run")
    seed = int(cfg.get("seed", 0))
    records = _records(cfg, args.records, args.kind)
    if run.n_edits > len(records):
        raise ValueError(f"run.n_edits ({run.n_edits}) exceeds the {len(records)} records in {args.records}")
    # the consistency metric's reference texts and idf come from the whole file, the same for every seed
    eval_cfg = prepare_evaluation(section(cfg, "evaluation"), records)
    all_records, records = records, edit_stream(records, run.n_edits, seed, run.shuffle)
    stats = LayerStats.load(args.stats) if args.stats else None
    restored, digests = _restored(args, cfg, stats)
    if restored:
        return
    seed_everything(seed)
    model, tok = _load(cfg, args.model)
    check_records_fit(model, tok, records, _generation_length(section(cfg, "evaluation")))
    _add_capability_probe(eval_cfg, model, tok, all_records, records)
    check_edit_dtype(model, build(ModelConfig, section(cfg, "model"), "model").allow_low_precision_edits)
    editor = editor_cls(hp, model, tok, spec_for(model), stats, seed=seed)
    metrics = run_sequential(model, tok, records, editor, run, eval_cfg, args.out_dir, cfg,
                             seed=seed, progress=not args.quiet)
    write_json(Path(args.out_dir) / INPUTS, digests)  # what `seqedit archive` checks a later restore against
    f = metrics["final"]
    print(f"{method['name']} after {metrics['n_edits']} edits: efficacy {f['efficacy']:.1f}, "
          f"generalization {f['generalization']:.1f}, specificity {f['specificity']:.1f}")


def cmd_trace(args) -> None:
    from seqedit.analysis.tracing import TracingConfig, trace
    from seqedit.models.arch import spec_for
    from seqedit.repro import provenance, seed_everything

    cfg = read_config(args.config)
    tc = build(TracingConfig, section(cfg, "tracing"), "tracing")
    if args.kind not in ("counterfact", "counterfact_easyedit"):
        raise ValueError(f"causal tracing needs records with a true object (counterfact, counterfact_easyedit), "
                         f"got --kind {args.kind}")
    records = _records(cfg, args.records, args.kind)
    seed_everything(tc.seed)
    model, tok = _load(cfg, args.model)
    t0 = time.time()
    result = trace(model, tok, spec_for(model), [r.request for r in records], tc, progress=not args.quiet)
    result.update({"records": str(args.records), "seconds": round(time.time() - t0, 2), "provenance": provenance(cfg)})
    write_json(args.out, result)
    c = result["counts"]
    print(f"causal tracing of {c['traced']} known facts ({c['known']} of the first {c['checked']} records known): "
          f"peak at layer "
          f"{result['peak_layer']} (indirect effect {result['effect'][result['peak_layer']]:.4f}), MEMIT window "
          f"{result['memit_layers']}, {result['seconds']} s")


def cmd_prepare_model(args) -> None:
    from seqedit.models.prepare import PrepareConfig, find_prepared, link_prepared, prepare_model

    cfg = read_config(args.config)
    pc = build(PrepareConfig, section(cfg, "model_source"), "model_source")
    if args.reuse and _reused("model", *find_prepared(pc, args.reuse, args.out),
                              lambda found: link_prepared(found, args.out)):
        return
    prov = prepare_model(pc, args.out, args.download_dir, progress=not args.quiet)
    m = prov["model"]
    print(f"prepared {m['model_type']} ({m['n_parameters']:,} parameters, {m['n_layers']} layers, d_model "
          f"{m['d_model']}, d_ff {m['d_ff']}, vocabulary {m['vocab_size']}) in {args.out}: {prov['conversion']}, "
          f"{prov['seconds']} s")


def cmd_known(args) -> None:
    from seqedit.data import read_raw_records
    from seqedit.knowledge import known_records

    cfg = read_config(args.config)
    raws = read_raw_records(args.records, args.kind)
    records = _records(cfg, args.records, args.kind)  # parsed in the same order as `raws`
    n_edits = section(cfg, "run").get("n_edits")
    model, tok = _load(cfg, args.model)
    known, scores = known_records(model, tok, records, section(cfg, "evaluation").get("batch_size", 64),
                                  progress=not args.quiet)
    n_known = sum(known)
    if n_edits is not None and n_known < n_edits:
        raise ValueError(f"the model knows {n_known} of the {len(records)} records in {args.records}, fewer than "
                         f"run.n_edits ({n_edits}): use more records (data.limit) or fewer edits")
    kept = [raw for raw, k in zip(raws, known) if k]
    Path(args.records_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.records_out).write_bytes((json.dumps(kept, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    write_json(args.out, {
        "tried": len(records), "known": n_known, "known_fraction": n_known / len(records),
        "records": str(args.records), "kind": args.kind, "known_records": str(args.records_out),
        "criterion": "mean token NLL of the true object below that of the new object on the rewrite prompt",
        "known_case_ids": [s["case_id"] for s, k in zip(scores, known) if k],
        "per_record": scores,
    })
    print(f"the model knows {n_known} of {len(records)} records ({100 * n_known / len(records):.1f} %); "
          f"wrote them to {args.records_out}")


def cmd_collect(args) -> None:
    from seqedit.analysis.collect import write_study

    study = write_study(args.runs, args.out)
    print(f"collected {len(study['runs'])} runs into {args.out}")


def cmd_report(args) -> None:
    from seqedit.report import render_report
    from seqedit.report.build import build_spec

    study = json.loads(Path(args.study).read_text())
    def opt(path):
        return json.loads(Path(path).read_text()) if path else None

    devs = None
    if args.stats_config:
        from seqedit.analysis.deviations import deviations

        devs = deviations(study, opt(args.stats_config).get("stats"), args.hparams_dir, args.hparams_model,
                          opt(args.known))
    prepared = opt(Path(args.model_dir) / "provenance.json") if args.model_dir else None
    spec = build_spec(study, args.figures, args.captions, opt(args.knowledge_check), opt(args.known),
                      opt(args.tracing), args.tracing_figure, devs, prepared=prepared)
    spec.pop("claims")
    render_report(spec, args.html, args.pdf)
    print(f"report written to {args.html} and {args.pdf}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqedit", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name, fn, *opts, optional=()):
        s = sub.add_parser(name)
        s.add_argument("--config", required=True)
        s.add_argument("--quiet", action="store_true", help="no progress bars")
        s.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
        for o in opts:
            s.add_argument(f"--{o}", required=o not in optional)
        s.set_defaults(fn=fn)
        return s

    add("world", cmd_world, "out-dir")
    s = sub.add_parser("fetch", help="download a benchmark file once, checked against its sha256")
    s.add_argument("--out", required=True, help="where the download goes")
    s.add_argument("--url", default="", help="empty: fail, naming the file to place")
    s.add_argument("--sha256", default=None)
    s.add_argument("--place", default=None, help="path named in the error when there is nothing to download")
    s.add_argument("--url-setting", default="--url", help="the setting that holds the URL, named in that error")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_fetch, threads=None)
    for name, fn, what in (("subset", cmd_subset, "copy the first --limit records of a benchmark file"),
                           ("corpus", cmd_corpus, "write the corpus stating the true facts of benchmark records")):
        s = sub.add_parser(name, help=what)
        s.add_argument("--records", required=True)
        s.add_argument("--kind", required=True, choices=["counterfact", "zsre", "counterfact_easyedit"])
        s.add_argument("--out", required=True)
        s.add_argument("--limit", type=int, default=None, help="the first N records only")
        if name == "subset":
            s.add_argument("--drop-unchanged", action="store_true",
                           help="leave out records whose edit target equals their true answer")
        s.set_defaults(fn=fn, threads=None)
    add("train-testbed", cmd_train_testbed, "corpus", "out")
    add("check-knowledge", cmd_check_knowledge, "model", "records", "kind", "out")
    s = add("stats", cmd_stats, "model", "corpus", "out", optional=("corpus",))  # corpus: with stats.source corpus
    s.add_argument("--texts-from", default=None,
                   help="an archive's stats_texts.json: sum over its generated texts when the model and settings match")
    s.add_argument("--reuse", nargs="*", default=[], metavar="FILE",
                   help="statistics files of other results folders: copy the first one summed by the same model "
                        "with the same settings and threads instead of summing again")
    s = add("edit", cmd_edit, "model", "stats", "records", "kind", "out-dir", optional=("stats",))
    s.add_argument("--restore-from", default=None,
                   help="an archive of finished runs (seqedit archive): take the run from it when its inputs match")
    s = sub.add_parser("archive", help="copy the finished runs of a study's edit folder into an archive folder")
    s.add_argument("--runs", required=True, help="the study's edit folder, results/<model>/edit")
    s.add_argument("--out", required=True)
    s.add_argument("--stats", default=None, help="the statistics whose generated texts to keep (default: "
                   "the stats/mom2.pt beside --runs)")
    s.add_argument("--model", default=None, help="the model that generated them (default: the model/ beside --runs)")
    s.add_argument("--quiet", action="store_true", help="accepted for symmetry with the other stages")
    s.set_defaults(fn=cmd_archive, threads=None)
    add("trace", cmd_trace, "model", "records", "kind", "out")
    add("known", cmd_known, "model", "records", "kind", "out", "records-out")
    s = add("prepare-model", cmd_prepare_model, "out", "download-dir", optional=("download-dir",))
    s.add_argument("--reuse", nargs="*", default=[], metavar="DIR",
                   help="model directories prepared by other results folders: link the first one made from the "
                        "same pinned source by the same library versions instead of preparing again")
    s = sub.add_parser("collect", help="collect run folders into one study file")
    s.add_argument("--runs", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_collect, threads=None)
    s = sub.add_parser("report", help="render the study report (HTML and PDF)")
    s.add_argument("--study", required=True)
    s.add_argument("--figures", nargs="+", required=True)
    s.add_argument("--captions", nargs="*", default=[])
    s.add_argument("--knowledge-check", default=None)
    s.add_argument("--known", default=None, help="known.json of `seqedit known`: the counts for the setup")
    s.add_argument("--model-dir", default=None,
                   help="the model directory of `seqedit prepare-model`: its provenance.json names the model")
    s.add_argument("--tracing", default=None, help="tracing.json of `seqedit trace` (with --tracing-figure)")
    s.add_argument("--tracing-figure", default=None)
    s.add_argument("--stats-config", default=None,
                   help="the statistics stage config: adds the deviations from the papers' protocols")
    s.add_argument("--hparams-dir", default=None, help="hyperparameter files, compared with the papers' own")
    s.add_argument("--hparams-model", default=None, help="model name of the study's hyperparameter files")
    s.add_argument("--html", required=True)
    s.add_argument("--pdf", required=True)
    s.set_defaults(fn=cmd_report, threads=None)
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # parallel jobs on few cores must not oversubscribe them
    try:
        args.fn(args)
    except (ValueError, FileNotFoundError, KeyError, OSError, NumericalError) as err:
        print(f"seqedit {args.cmd}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
