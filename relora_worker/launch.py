"""``python -m relora_worker.launch --nproc-per-node N readapt …``: torchrun's launcher, with relora's exit codes.

torchrun reports any rank's non-zero exit as its own exit 1, which would turn a below-threshold run (3) or bad
input (2) into an "internal error" for the Job's podFailurePolicy. This starts the same ranks with torch's
elastic launcher (what torchrun runs, single node, standalone rendezvous) but calls the CLI as a function,
so each rank's exit code comes back as a value: the process exits with rank 0's (every rank takes the same
decisions, so they agree; rank 0 wrote the termination summary). A rank that crashes or is killed gives 1.
SIGTERM or SIGINT to the launcher (a deleted Job's pod: the kubelet signals PID 1 only) is passed on to every
rank by torch's agent, which waits for them; the launcher then exits 143 / 130 like one process, not 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
import uuid

from relora_worker.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED


def _rank_main(argv: list[str]) -> int:
    from relora_worker import cli

    return cli.main(argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m relora_worker.launch",
        description="Runs a relora command on N local processes (one per GPU) and exits with rank 0's code.",
    )
    parser.add_argument("--nproc-per-node", type=int, required=True, help="processes (GPUs) on this node")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the relora command and its options")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.nproc_per_node < 1:
        parser.error(f"--nproc-per-node {args.nproc_per_node}: expected 1 or more")
    if not args.command:
        parser.error("the relora command to run is missing (e.g. readapt --base-model …)")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=args.nproc_per_node,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone: a free port on this node
        max_restarts=0,  # a re-run would repeat the search and training: the Job's own retry decides that
    )
    try:
        codes = elastic_launch(config, _rank_main)(list(args.command))
    except ChildFailedError as error:
        print(f"relora launch: a rank failed: {error.get_first_failure()[1].message}", file=sys.stderr)
        return EXIT_INTERNAL
    except SignalException as error:  # the agent has already stopped the ranks with the same signal
        print(f"relora launch: stopped by {error.sigval.name}; the ranks were stopped with it", file=sys.stderr)
        return EXIT_INTERRUPTED if error.sigval == signal.SIGINT else EXIT_TERMINATED
    return int(codes[0])


if __name__ == "__main__":
    sys.exit(main())
