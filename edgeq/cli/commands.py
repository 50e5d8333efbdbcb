"""The `edgeq` command line: a thin layer over the Python API (edgeq.convert, ...)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from edgeq import __version__
from edgeq.errors import EdgeqError

log = logging.getLogger("edgeq")


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="edgeq: %(levelname)s: %(message)s", stream=sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq")
@click.option("-v", "--verbose", count=True, help="-v: steps; -vv: also what TF/LiteRT printed.")
def cli(verbose: int) -> None:
    """edgeq: full-integer TFLite models for phones, Raspberry Pis and microcontrollers."""
    _setup_logging(verbose)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Output directory (model.tflite, report.json, plan.json); written atomically.")
@click.option("--calib", required=True, type=click.Path(path_type=Path),
              help="Calibration .npz: one array per input (key = input name, or x).")
@click.option("--eval", "eval_", type=click.Path(path_type=Path),
              help="Evaluation .npz: inputs plus optional y (int labels or float targets).")
@click.option("--mode", type=click.Choice(["int8", "int16x8", "mixed"]),
              help="int8 everywhere; int16 activations everywhere; or int8 with chosen ops int16. "
                   "Default: mixed if --int16/--plan is given, else int8.")
@click.option("--int16", "int16", multiple=True, metavar="OPSPEC",
              help="(mixed) An op type (BATCH_MATMUL) or a regex on op output names; repeatable.")
@click.option("--plan", type=click.Path(path_type=Path), help="(mixed) A plan.json from edgeq search.")
@click.option("--calibration",
              help="Range estimate: minmax (absolute; the default, or the plan's), mse (least "
                   "int8 error per tensor) or percentile:P (e.g. percentile:99.99).")
@click.option("--rewrite", "rewrites", multiple=True, metavar="NAME",
              help="Graph rewrite, proved on float outputs. On by default: neg, "
                   "squared-difference, matmul-fc, index-fixup, rsqrt, mask-magnitude, "
                   "outlier-split, outlier-norm. On request: preprocessing (input normalisation "
                   "moves out into preprocessing.json), gelu-tanh (an approximation, for TFLite "
                   "Micro), int32-ids "
                   "(int64 inputs as int32, for TFLite Micro), or all.")
@click.option("--no-rewrite", is_flag=True,
              help="Leave the graph as it is (none of the default rewrites).")
@click.option("--strict", is_flag=True,
              help="Exit 1 if any op is not integer-only, or TFLite Micro cannot run the model "
                   "or differs from LiteRT beyond --tolerance.")
@click.option("--tolerance", type=click.IntRange(0),
              help="LSB TFLite Micro may differ from LiteRT (default: 2 int8, 32 int16 outputs).")
@click.option("--cmsis-nn", is_flag=True,
              help="For Arm Cortex-M firmware (TFLite Micro with CMSIS-NN kernels): int16x8 "
                   "FULLY_CONNECTED with per-tensor weights, the only kind CMSIS-NN takes "
                   "(measured on digits_attention int16x8: 0.9 dB SQNR less).")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the summary.")
def convert(model: Path, out: Path, calib: Path, eval_: Path | None, mode: str | None,
            int16: tuple[str, ...], plan: Path | None, calibration: str | None,
            rewrites: tuple[str, ...], no_rewrite: bool, strict: bool, tolerance: int | None,
            cmsis_nn: bool, as_json: bool) -> None:
    """Quantise MODEL (.keras/.h5, SavedModel dir or float .tflite) to a full-integer .tflite."""
    from edgeq.cli.render import convert_summary
    from edgeq.convert import ConvertConfig
    from edgeq.convert import convert as run_convert
    from edgeq.model.rewrite import chosen_rewrites

    cfg = ConvertConfig(model=model, out=out, calib=calib, eval=eval_, mode=mode, int16=int16,
                        plan=plan, strict=strict, calibration=calibration,
                        rewrites=chosen_rewrites(rewrites, no_rewrite),
                        show_progress=not as_json, tolerance=tolerance, cmsis_nn=cmsis_nn)
    result = run_convert(cfg)
    click.echo(json.dumps(result.report.to_dict(), indent=2) if as_json
               else convert_summary(result.report))
    if not as_json:
        click.echo(f"\nwrote {out}/model.tflite, report.json, plan.json")
    sys.exit(result.exit_code)


def _study_options(fn):
    for option in reversed([
        click.argument("model", type=click.Path(path_type=Path)),
        click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
                     help="Output directory; written atomically."),
        click.option("--calib", required=True, type=click.Path(path_type=Path),
                     help="Calibration .npz (calibrated once for every plan tried)."),
        click.option("--metric", type=click.Choice(["auto", "task", "sqnr", "cosine"]), default="auto",
                     show_default=True,
                     help="Judge plans by accuracy/RMSE (needs y), output SQNR vs float, or "
                          "mean per-sample cosine to float (embeddings)."),
        click.option("--calibration", default="auto", show_default=True,
                     help="minmax, mse (least int8 error per tensor), percentile:P, or auto: "
                          "search measures all-int8 under minmax, percentile:99.99 and mse and "
                          "goes on with the best (analyze: minmax)."),
        click.option("--latency", default="xnnpack", show_default=True,
                     help="How plans are timed: xnnpack[:THREADS] (LiteRT as users run it, "
                          "default settings; 2 threads) or builtin (LiteRT builtin kernels, 1 "
                          "thread: steadier, but blind to what int16 costs under XNNPACK)."),
        click.option("--no-groups", is_flag=True,
                     help="Only single ops as candidates (no layer/block groups)."),
        click.option("--rewrite", "rewrites", multiple=True, metavar="NAME",
                     help="Equivalent-graph rewrites first (see convert --help)."),
        click.option("--no-rewrite", is_flag=True, help="No default rewrites."),
        click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead."),
    ]):
        fn = option(fn)
    return fn


@cli.command()
@_study_options
@click.option("--eval", "eval_", type=click.Path(path_type=Path),
              help="Evaluation .npz (inputs + optional y); default: the calibration data.")
def analyze(model: Path, out: Path, calib: Path, metric: str, calibration: str, latency: str,
            no_groups: bool, rewrites: tuple[str, ...], no_rewrite: bool, as_json: bool,
            eval_: Path | None) -> None:
    """Per-op and per-group int16 sensitivity (both ways), costs and error attribution."""
    from edgeq.fsutil import check_output_dir
    from edgeq.study.analyze import analysis_summary, write_analysis
    from edgeq.study.analyze import analyze as run_analyze
    from edgeq.study.measure import LatencySetting

    check_output_dir(out)
    LatencySetting.parse(latency)  # a typo fails now, not after calibration
    from edgeq.model.rewrite import chosen_rewrites

    report = run_analyze(model, calib, eval_, metric, calibration, not no_groups, not as_json,
                         chosen_rewrites(rewrites, no_rewrite), latency)
    write_analysis(out, report)
    click.echo(json.dumps(report, indent=2) if as_json else analysis_summary(report))
    if not as_json:
        click.echo(f"\nwrote {out}/sensitivity.json")


@cli.command()
@_study_options
@click.option("--eval", "eval_", required=True, type=click.Path(path_type=Path),
              help="Evaluation .npz (inputs + optional y).")
@click.option("--max-drop", type=float,
              help="Allowed metric drop from the best plan measured, in the metric's unit. "
                   "Default: 0.5 accuracy points, 1 dB, 1% of RMSE, 0.01 cosine.")
@click.option("--max-bytes", type=int, help="Best point no larger than this many bytes.")
@click.option("--max-latency-ms", type=float, help="Best point no slower than this (LiteRT).")
@click.option("--cost", type=click.Choice(["bytes", "latency"]), default="bytes",
              show_default=True, help="What 'smallest' means under --max-drop.")
@click.option("--reuse", type=click.Path(path_type=Path),
              help="A previous plan.json: start from it and re-examine only changed ops.")
@click.option("--screen", default="auto", show_default=True, metavar="auto|off|N",
              help="Sensitivity and greedy runs on the first N eval samples, the frontier "
                   "measured again on all of them. auto: 32, when an all-int16x8 evaluation "
                   "takes over 5 s and the eval set has over 64 samples.")
@click.option("--allow-input-change", is_flag=True,
              help="Let the choice take a proposed rewrite that changes the model's input "
                   "(preprocessing moved into preprocessing.json); without it, it is only shown.")
def search(model: Path, out: Path, calib: Path, metric: str, calibration: str, latency: str,
           no_groups: bool, rewrites: tuple[str, ...], no_rewrite: bool, as_json: bool, eval_: Path,
           max_drop: float | None, max_bytes: int | None, max_latency_ms: float | None, cost: str,
           reuse: Path | None, screen: str, allow_input_change: bool) -> None:
    """Pareto search over int16 plans; writes the plan and model at the chosen point.

    Exit 0 when a point meets the constraint, 1 when none does (the best is named)."""
    from edgeq.fsutil import check_output_dir
    from edgeq.model.rewrite import chosen_rewrites
    from edgeq.study.measure import LatencySetting
    from edgeq.study.search import Constraint, parse_screen, search_summary, write_search
    from edgeq.study.search import search as run_search

    check_output_dir(out)
    LatencySetting.parse(latency)
    parse_screen(screen)
    constraint = Constraint.from_options(max_drop, max_bytes, max_latency_ms,
                                         "latency_ms" if cost == "latency" else "bytes")
    result = run_search(model, calib, eval_, constraint, metric, calibration, not no_groups,
                        reuse, not as_json, chosen_rewrites(rewrites, no_rewrite), latency,
                        allow_input_change, screen)
    write_search(out, result)
    click.echo(json.dumps(result.report.to_dict(), indent=2) if as_json
               else search_summary(result))
    if not as_json:
        written = "pareto.json/csv/png" + (", plan.json, model.tflite" if result.plan else "")
        click.echo(f"\nwrote {out}/: {written}")
    sys.exit(result.exit_code)


@cli.command("compare")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--eval", "eval_", required=True, type=click.Path(path_type=Path),
              help="Evaluation .npz (inputs + optional y), as for convert.")
@click.option("--runtimes", default="litert-builtin,litert,litert-ref,tflm", show_default=True,
              help="Comma-separated, first = reference: litert (XNNPACK), litert-builtin, "
                   "litert-ref (reference kernels), tflm (TFLite Micro).")
@click.option("--float", "float_model", type=click.Path(path_type=Path),
              help="The float model (.keras/.h5/SavedModel/.tflite): SQNR vs float per runtime.")
@click.option("--samples", type=click.IntRange(1, 10_000), default=16, show_default=True)
@click.option("--tolerance", type=click.IntRange(0), help="LSB accepted between runtimes "
              "(default: 2 for int8 outputs, 32 for int16).")
@click.option("--no-per-op", is_flag=True, help="Compare final outputs only (faster).")
@click.option("--preprocessing", type=click.Path(path_type=Path),
              help="Preprocessing contract (default: preprocessing.json beside MODEL, if any).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def compare_cmd(model: Path, eval_: Path, runtimes: str, float_model: Path | None, samples: int,
                tolerance: int | None, no_per_op: bool, preprocessing: Path | None,
                as_json: bool) -> None:
    """Run a quantised MODEL in several runtimes; name the first op where they part.

    Exit 0 every runtime within tolerance of the first; 1 one differs or fails; 2 bad input."""
    from edgeq.cli.render import compare_summary
    from edgeq.study.compare import CompareConfig, compare_model, parse_runtimes

    comparison = compare_model(CompareConfig(model, eval_, parse_runtimes(runtimes), float_model,
                                             samples, tolerance, not no_per_op, preprocessing))
    click.echo(json.dumps(comparison.to_dict(), indent=2) if as_json
               else compare_summary(comparison, str(model)))
    sys.exit(0 if comparison.ok else 1)


@cli.group()
def export() -> None:
    """Export a quantised model for a deployment target."""


@export.command("micro")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Output directory (C/C++ sources, template, manifest.json); written atomically.")
@click.option("--name", required=True, help="Model name for C symbols (g_NAME_model_data, ...).")
@click.option("--target", type=click.Choice(["generic", "arduino", "zephyr", "esp-idf"]),
              default="generic", show_default=True, help="Firmware template to render.")
@click.option("--golden", type=click.Path(path_type=Path),
              help="eval.npz: a few samples become golden input/output C arrays and a board test.")
@click.option("--golden-samples", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--section", help="Linker section for the model array (e.g. .model_flash).")
@click.option("--preprocessing", type=click.Path(path_type=Path),
              help="Preprocessing contract (default: preprocessing.json beside MODEL, if any).")
@click.option("--no-verify", is_flag=True,
              help="Skip compiling the sources and re-running the compiled bytes in TFLM.")
@click.option("--tolerance", type=click.IntRange(0),
              help="LSB TFLite Micro may differ from LiteRT (default: 2 int8, 32 int16 outputs).")
@click.option("--json", "as_json", is_flag=True, help="Print manifest.json.")
def export_micro(model: Path, out: Path, name: str, target: str, golden: Path | None,
                 golden_samples: int, section: str | None, preprocessing: Path | None,
                 no_verify: bool, tolerance: int | None, as_json: bool) -> None:
    """C arrays for TensorFlow Lite Micro: exact op resolver, measured arena, model hash."""
    from edgeq.micro import MicroConfig
    from edgeq.micro import export_micro as run_export

    manifest = run_export(MicroConfig(model, out, name, target, golden, section, preprocessing,
                                      golden_samples, not no_verify, tolerance))
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    a, m = manifest["arena"], manifest["model"]
    click.echo(f"edgeq export micro: {model} -> {out}/ ({target})")
    click.echo(f"model     g_{manifest['name']}_model_data: {m['bytes']:,} bytes, "
               f"sha256 {m['sha256'][:16]}...")
    click.echo(f"ops       {manifest['op_resolver_size']}: " + ", ".join(o["op"] for o in manifest["ops"]))
    click.echo(f"arena     {a['exported_bytes']:,} bytes = measured {a['measured_bytes']:,} + margin "
               f"{a['margin_bytes']:,} (TFLM Python default {a['tflm_python_default_bytes']:,})")
    verified = manifest.get("verified")
    if verified:
        for target_name, v in verified["objects"].items():
            click.echo(f"compiled  {target_name}: " + (f"{v['compiler']}, {v['section']}, aligned "
                       f"{v['alignment']}, read-only, bytes equal" if v["checked"] else
                       f"skipped ({v['compiler']} {v['why']})"))
        t = verified.get("tflm_from_object")
        if t:
            click.echo(f"TFLM      compiled bytes run in a {t['arena_bytes']:,}-byte arena; max |diff| vs "
                       f"LiteRT {t['max_abs_diff_lsb_vs_litert']} LSB over {t['samples']} samples")
    click.echo(f"\nwrote {len(manifest['files'])} files to {out}/")


@cli.group()
def plan() -> None:
    """Precision plans (plan.json): check them against a model."""


@plan.command("check")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("plan_file", metavar="PLAN", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the check as JSON.")
def plan_check(model: Path, plan_file: Path, as_json: bool) -> None:
    """Exit 0 if PLAN still matches MODEL; else 1 with removed / renamed / new ops."""
    from edgeq.model.graph import read_ops
    from edgeq.model.load import load_model
    from edgeq.quant.plan import Plan, check_plan

    loaded = Plan.load(plan_file)
    result = check_plan(loaded, read_ops(load_model(model).tflite))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif result.ok:
        click.echo(f"{plan_file}: all {len(loaded.int16)} int16 entries match {model}")
    else:
        click.echo(f"{plan_file}: does not match {model}: {len(result.stale)} of "
                   f"{len(loaded.int16)} int16 entries stale")
        for line in result.drift():
            click.echo(f"  {line}")
    sys.exit(0 if result.ok else 1)


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A float option must be a real number (click's ranges let NaN through)."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def _broker_options(fn):
    for option in reversed([
        click.option("--broker", required=True, metavar="URL",
                     help="mqtt://HOST:PORT, or mqtts://HOST:PORT for TLS."),
        click.option("--username", help="Broker username."),
        click.option("--password-file", type=click.Path(path_type=Path),
                     help="File holding the broker password (kept out of `ps`)."),
        click.option("--tls-ca", type=click.Path(path_type=Path),
                     help="CA certificate to verify an mqtts:// broker."),
    ]):
        fn = option(fn)
    return fn


_db_option = click.option(
    "--db", required=True, metavar="FILE|URL",
    help="Result store: a SQLite file, or postgresql://USER@HOST:PORT/DB shared by many "
         "collectors and hosts (password: PGPASSWORD or ~/.pgpass, kept out of `ps`).")


def _broker(url: str, username: str | None, password_file: Path | None, tls_ca: Path | None):
    from device_agent.connection import Broker, ConnectionConfigError
    from edgeq.errors import InputError

    try:
        return Broker.from_url(url, username, password_file, tls_ca)
    except ConnectionConfigError as e:
        raise InputError(str(e)) from e


def _device(device: str) -> str:
    from device_agent.protocol import ProtocolError, check_device_id
    from edgeq.errors import InputError

    try:
        return check_device_id(device)
    except ProtocolError as e:
        raise InputError(str(e)) from e


@cli.group()
def keys() -> None:
    """Ed25519 keys that sign deploy bundles."""


@keys.command("generate")
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path),
              help="Directory for host.key (private, mode 0600) and host.pub (give to agents).")
def keys_generate(out: Path) -> None:
    """Make a signing key pair; refuses to overwrite an existing key."""
    from device_agent.signing import SignatureError, generate_keys
    from edgeq.errors import InputError

    try:
        private, public = generate_keys(out)
    except SignatureError as e:
        raise InputError(str(e)) from e
    click.echo(f"wrote {private} (keep private) and {public} (agents: --trust-key {public})")


@cli.command("deploy")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--device", required=True, help="Device id of the target agent.")
@_broker_options
@click.option("--key", required=True, type=click.Path(path_type=Path),
              help="Signing key (host.key from `edgeq keys generate`).")
@click.option("--eval", "eval_", type=click.Path(path_type=Path),
              help="eval.npz shipped with the model: the device reports accuracy and agreement "
                   "with the host's quantised outputs on it.")
@click.option("--eval-samples", type=click.IntRange(0), default=0, show_default=True,
              help="Ship at most this many eval samples (0: all).")
@click.option("--preprocessing", type=click.Path(path_type=Path),
              help="Preprocessing contract (default: preprocessing.json beside MODEL, if any).")
@click.option("--name", help="Model name on the device (default: from the path).")
@click.option("--chunk-kb", type=click.IntRange(1, 16384), default=256, show_default=True)
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              callback=_finite, help="Seconds to wait for each answer of the device.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def deploy_cmd(model: Path, device: str, broker: str, username: str | None,
               password_file: Path | None, tls_ca: Path | None, key: Path, eval_: Path | None,
               eval_samples: int, preprocessing: Path | None, name: str | None, chunk_kb: int,
               timeout: float, as_json: bool) -> None:
    """Send a quantised MODEL to a device; wait until it is activated or rejected.

    Exit 0 activated; 1 the device rejected it (reason printed, its old model stays active);
    2 bad input; 3 broker or device unreachable / timed out."""
    from edgeq.fleet.deploy import DeployConfig, deploy

    verdict = deploy(DeployConfig(model, _device(device), _broker(broker, username, password_file,
                                                                  tls_ca), key, eval_,
                                  eval_samples, preprocessing, name, chunk_kb * 1024, timeout,
                                  show_progress=not as_json))
    if as_json:
        click.echo(json.dumps(verdict, indent=2))
        return
    b, t, m = verdict["bundle"], verdict["seconds"], verdict["model"] or {}
    click.echo(f"edgeq deploy: {model} -> {device}: {verdict['state']} "
               f"({m.get('name')}, sha256 {str(m.get('sha256'))[:12]}..., {verdict['runtime']})")
    click.echo(f"bundle   {b['bytes']:,} bytes in {b['chunks']} chunks, {b['eval_samples']} eval "
               f"samples{', preprocessing contract' if b['preprocessing'] else ''}")
    click.echo(f"time     transfer {t['transfer']:.2f} s ({verdict['throughput_mb_s']} MB/s), "
               f"device check + activate {t['activate']:.2f} s, total {t['total']:.2f} s")


@cli.command("rollback")
@click.option("--device", required=True, help="Device id.")
@_broker_options
@click.option("--key", required=True, type=click.Path(path_type=Path),
              help="Signing key (host.key): a rollback is a signed command too.")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              callback=_finite)
@click.option("--json", "as_json", is_flag=True, help="Print the device's answer as JSON.")
def rollback_cmd(device: str, broker: str, username: str | None, password_file: Path | None,
                 tls_ca: Path | None, key: Path, timeout: float, as_json: bool) -> None:
    """Make the device's previous model active again (it keeps one), after a load check.

    Exit 0 rolled back; 1 the device has no previous model (or it no longer loads);
    2 bad input; 3 unreachable / timed out."""
    from edgeq.fleet.remote import rollback

    event = rollback(_broker(broker, username, password_file, tls_ca), _device(device), key,
                     timeout)
    model = event.get("model") or {}
    click.echo(json.dumps(event, indent=2) if as_json else
               f"edgeq rollback: {device} now runs {model.get('name')} "
               f"(sha256 {str(model.get('sha256'))[:12]}...)")


@cli.command("bench")
@click.option("--device", required=True, help="Device id.")
@_broker_options
@click.option("--runs", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--warmup", type=click.IntRange(0, 100_000), default=10, show_default=True)
@click.option("--min-seconds", type=click.FloatRange(0, 3600), default=0.0, show_default=True,
              callback=_finite, help="Keep timing at least this long.")
@click.option("--max-seconds", type=click.FloatRange(0.01, 3600), default=60.0,
              show_default=True, callback=_finite)
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--power-window", type=click.FloatRange(0.1, 600), default=2.0, show_default=True,
              callback=_finite, help="Seconds of idle and of busy power sampling.")
@click.option("--no-power", is_flag=True, help="Skip the power windows.")
@click.option("--no-eval", is_flag=True, help="Skip accuracy on the deployed eval set.")
@click.option("--timeout", type=click.FloatRange(1, 7200), callback=_finite,
              help="Seconds to wait for the report (default: from the run).")
@click.option("--json", "as_json", is_flag=True, help="Print the device's result message.")
def bench_cmd(device: str, broker: str, username: str | None, password_file: Path | None,
              tls_ca: Path | None, runs: int, warmup: int, min_seconds: float, max_seconds: float,
              threads: int, power_window: float, no_power: bool, no_eval: bool,
              timeout: float | None, as_json: bool) -> None:
    """Benchmark the device's active model: latency, power, accuracy; print the report.

    Exit 0 report without errors; 1 the device failed or refused; 3 unreachable / timed out."""
    from edgeq.cli.render import bench_summary
    from edgeq.fleet.remote import benchmark_timeout, request_report

    args = {"runs": runs, "warmup": warmup, "min_seconds": min_seconds,
            "max_seconds": max_seconds, "threads": threads, "power": not no_power,
            "power_window_s": power_window, "evaluate": not no_eval}
    result = request_report(_broker(broker, username, password_file, tls_ca), _device(device),
                            "benchmark", timeout or benchmark_timeout(args), **args)
    click.echo(json.dumps(result, indent=2) if as_json else bench_summary(result))
    sys.exit(1 if result["errors"] else 0)


def _tags(texts: tuple[str, ...]) -> dict[str, str]:
    from device_agent.protocol import ProtocolError, parse_tags
    from edgeq.errors import InputError

    try:
        return parse_tags(texts)
    except ProtocolError as e:
        raise InputError(str(e)) from e


_targeting_options = [
    click.option("--group", help="Only devices in this group (edgeq-agent --group)."),
    click.option("--tag", "tags", multiple=True, metavar="K=V",
                 help="Only devices with this tag (repeatable: all must match)."),
]


def _targeting(fn):
    for option in reversed(_targeting_options):
        fn = option(fn)
    return fn


@cli.command("devices")
@_broker_options
@_targeting
@click.option("--json", "as_json", is_flag=True, help="Print the retained statuses as JSON.")
def devices_cmd(broker: str, username: str | None, password_file: Path | None,
                tls_ca: Path | None, group: str | None, tags: tuple[str, ...],
                as_json: bool) -> None:
    """Every device that has connected: online/offline, arch, runtime, active model, groups."""
    from device_agent.protocol import matches
    from edgeq.cli.render import devices_table
    from edgeq.fleet.session import list_devices

    wanted = _tags(tags)
    found = [s for s in list_devices(_broker(broker, username, password_file, tls_ca))
             if matches(s, group, wanted)]
    click.echo(json.dumps(found, indent=2) if as_json else devices_table(found))


@cli.command("collect")
@_broker_options
@_db_option
@click.option("--group", default="edgeq", show_default=True,
              help="Shared-subscription group: collectors in one group split the results.")
@click.option("--client-id", help="Stable MQTT client id (default: edgeq-collector-HOST-GROUP); "
                                  "the broker keeps its session while it is down.")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve Prometheus metrics on http://BIND:PORT/metrics.")
@click.option("--metrics-bind", default="127.0.0.1", show_default=True,
              help="Address for the metrics endpoint (0.0.0.0 inside a container).")
def collect_cmd(broker: str, username: str | None, password_file: Path | None,
                tls_ca: Path | None, db: str, group: str, client_id: str | None,
                metrics_port: int | None, metrics_bind: str) -> None:
    """Collector daemon: store every device result once, until SIGINT/SIGTERM."""
    import signal
    import threading

    from edgeq.fleet.collector import Collector, CollectorConfig

    log.setLevel(min(log.getEffectiveLevel(), logging.INFO))  # a daemon says what it stores
    collector = Collector(CollectorConfig(_broker(broker, username, password_file, tls_ca), db,
                                          group, client_id, metrics_port=metrics_port,
                                          metrics_bind=metrics_bind))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    collector.run(stop)


@cli.command("reports")
@_db_option
@click.option("--device", help="Only this device.")
@click.option("--json", "as_json", is_flag=True, help="Rows as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Rows as CSV.")
@click.option("--plot", type=click.Path(path_type=Path), help="Also write a PNG comparison.")
def reports_cmd(db: str, device: str | None, as_json: bool, as_csv: bool,
                plot: Path | None) -> None:
    """Compare devices and models side by side: latency, energy, accuracy, agreement."""
    from edgeq.fleet.reports import plot as plot_rows
    from edgeq.fleet.reports import summarize, table, to_csv
    from edgeq.fleet.store import open_store

    store = open_store(db, must_exist=True)
    try:
        rows = summarize(store.results(device))
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"rows": rows}, indent=2))
    elif as_csv:
        click.echo(to_csv(rows), nl=False)
    else:
        click.echo(table(rows))
    if plot and rows:
        plot_rows(rows, plot)
        if not (as_json or as_csv):
            click.echo(f"\nwrote {plot}")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: temp outputs are removed, OUT stays as it was


def main() -> None:
    """Entry point: EdgeqError -> one line on stderr and exit 2."""
    import signal

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        cli.main(standalone_mode=False)
    except EdgeqError as e:
        click.echo(f"edgeq: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("edgeq: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(2)
    except SystemExit:
        raise


if __name__ == "__main__":
    main()
