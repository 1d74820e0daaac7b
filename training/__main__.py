"""``python -m training <command>``: train, register and inspect adapters from a shell.

    python -m training reward   --adapter NAME-rm --data prefs.jsonl [--config run.yaml] [flags]
    python -m training ppo      --adapter NAME --reward NAME-rm@production --prompts prompts.jsonl
    python -m training dpo      --adapter NAME --data prefs.jsonl
    python -m training feedback import FILE --use-case NAME
    python -m training register PATH --adapter NAME [--kind reward]
    python -m training registry list
    python -m training demo-data DIR / demo-base DIR / demo-adapter DIR
    python -m training run-job ID      (run one queued job; what a job runner starts)
    python -m training worker          (launch queued jobs; what python -m service starts)

``--data`` / ``--prompts`` take a JSONL file, ``snapshot:ID`` or ``feedback:USE_CASE`` (a new
snapshot of the store's feedback for that use case).

Every training flag is also a config-file key (see training/config.py). Under
``torchrun --nproc_per_node N -m training ...`` the same commands train data-parallel.
Exit status: 0 done, 1 a domain error (registry, store), 2 a bad argument or config.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from core.errors import LoraloopError
from training.cli_feedback import add_feedback_parser, feedback_command
from training.cli_registry import (
    add_register_parser,
    add_registry_parser,
    register_command,
    registry_command,
)
from training.config import (
    DPOConfig,
    PPOConfig,
    RewardConfig,
    TrainConfig,
    add_config_arguments,
    config_from_args,
)
from training.progress import print_summary

log = logging.getLogger("training")

# command -> (config class, module with its main(config), help); the module loads on use.
ALGORITHMS: dict[str, tuple[type[TrainConfig], str, str]] = {
    "reward": (
        RewardConfig,
        "training.reward",
        "train a reward model (LoRA + score head, Bradley-Terry)",
    ),
    "ppo": (PPOConfig, "training.ppo", "train a policy adapter with PPO against a reward adapter"),
    "dpo": (DPOConfig, "training.dpo", "train a policy adapter with DPO from preference pairs"),
}


def train_command(args: argparse.Namespace) -> int:
    config_cls, module, _ = ALGORITHMS[args.command]
    config = config_from_args(config_cls, args)
    result = importlib.import_module(module).main(config)
    if result is None:  # not the main process of a torchrun job
        return 0
    print_summary(f"{args.command} run: {config.adapter}", result.summary())
    if result.manifest is not None:
        print(result.manifest.ref)
    return 0


def demo_data_command(args: argparse.Namespace) -> int:
    from training.synthetic import write_demo_data

    files = write_demo_data(args.folder, n_pairs=args.pairs, n_prompts=args.prompts, seed=args.seed)
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


def demo_base_command(args: argparse.Namespace) -> int:
    from core.base.folders import base_model_path
    from core.settings import Settings
    from training.synthetic import make_demo_base

    source = base_model_path(Settings())
    print(make_demo_base(source, args.folder, steps=args.steps, seed=args.seed))
    return 0


def add_job_parsers(commands: argparse._SubParsersAction) -> None:
    """``run-job`` and ``worker`` (training/jobs)."""
    run = commands.add_parser("run-job", help="run one queued job in this process (docs/jobs.md)")
    run.add_argument("job_id", metavar="ID")
    run.set_defaults(run=run_job_command)
    worker = commands.add_parser("worker", help="launch queued jobs until stopped (docs/jobs.md)")
    worker.add_argument("--once", action="store_true", help="one pass, then exit")
    worker.add_argument(
        "--parent", type=int, metavar="PID",
        help="stop (as on SIGTERM) once process PID is gone: the server that supervises it",
    )
    worker.set_defaults(run=worker_command)


def run_job_command(args: argparse.Namespace) -> int:
    from core.settings import Settings
    from training.jobs.run_job import run_job

    return run_job(args.job_id, Settings())


def worker_command(args: argparse.Namespace) -> int:
    from core.settings import Settings
    from training.jobs.worker import run_worker

    return run_worker(Settings(), once=args.once, parent=args.parent)


def demo_adapter_command(args: argparse.Namespace) -> int:
    from core.settings import Settings
    from training.demo_adapter import build_demo_adapter

    settings = Settings(base_model=args.base_model, base_model_id=None)
    metrics = build_demo_adapter(
        args.folder, settings, n_prompts=args.prompts, train_steps=args.steps, seed=args.seed
    )
    print_summary(f"demo adapter: {args.folder}", metrics)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (config_cls, _, help_text) in ALGORITHMS.items():
        sub = commands.add_parser(name, help=help_text, description=config_cls.__doc__)
        add_config_arguments(sub, config_cls)
        sub.set_defaults(run=train_command)
    # Commands other modules own: (parser builder, command name, handler).
    for add_parser, name, handler in (
        (add_feedback_parser, "feedback", feedback_command),
        (add_register_parser, "register", register_command),
        (add_registry_parser, "registry", registry_command),
    ):
        add_parser(commands)
        commands.choices[name].set_defaults(run=handler)
    demo = commands.add_parser(
        "demo-data", help="write a synthetic preference task (docs/training.md)"
    )
    demo.add_argument("folder", type=Path)
    demo.add_argument("--pairs", type=int, default=1000)
    demo.add_argument("--prompts", type=int, default=200)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=demo_data_command)
    base = commands.add_parser(
        "demo-base",
        help="fine-tune the configured base on the demo task's language (docs/training.md)",
    )
    base.add_argument("folder", type=Path, help="where to write the fine-tuned checkpoint")
    base.add_argument("--steps", type=int, default=120)
    base.add_argument("--seed", type=int, default=0)
    base.set_defaults(run=demo_base_command)
    add_job_parsers(commands)
    adapter = commands.add_parser(
        "demo-adapter",
        help="generate the ALL CAPS preference data and train the demo adapter with DPO "
        "(docs/training.md)",
    )
    adapter.add_argument("folder", type=Path, help="where to write the data and the adapter")
    adapter.add_argument("--base-model", default="smollm2-135m-instruct")
    adapter.add_argument("--prompts", type=int, default=200)
    adapter.add_argument("--steps", type=int, default=90)
    adapter.add_argument("--seed", type=int, default=0)
    adapter.set_defaults(run=demo_adapter_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "httpx", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.run(args)
    except LoraloopError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # a bad setting or data file; the message says what to change
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
