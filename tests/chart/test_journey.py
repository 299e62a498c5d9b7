"""README.md, run: every ```sh block marked `<!-- tested -->` runs in order, as written, in bash with
kubectl and helm bound to the test control plane; a block marked `<!-- tested: watch -->` runs until it is
interrupted (like Ctrl-C). The other blocks must say why they are not run here.

What the test provides around the blocks (the reader's own settings, per the page): the variables BUCKET,
S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (the loopback S3 server), a working directory with the
repository's charts/ and examples/, and for `helm install/upgrade` an extra values file with what only the
test cluster needs: free ports (every pod is a local process on loopback), a 1 s resync, and the operator
tests' stand-in worker (same contract, instant) as the worker command. CRDs left by earlier tests of the
session are labelled for adoption by this release, as a first install would find none."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import ROOT, helm_bin
from tests.chart.cluster import adopt_crds, chart_values
from tests.support.cli import CliRunner
from tests.support.k8s_fixtures import Cluster

DOC = ROOT / "README.md"
MARKERS = ("tested", "tested: watch", "needs a GPU cluster", "needs a real cluster", "covered elsewhere")
RELEASE, SYSTEM, TEAM = "relora-operator", "relora-system", "ml-team"
WATCH_SECONDS = 8


@dataclass
class Block:
    line: int
    marker: str
    code: str


def blocks() -> list[Block]:
    text = DOC.read_text()
    found = []
    for m in re.finditer(r"^```sh\n(.*?)^```$", text, re.M | re.S):
        line = text[: m.start()].count("\n") + 1
        before = text[: m.start()].rstrip().splitlines()[-1].strip()
        marker = re.fullmatch(r"<!--\s*(.*?)\s*-->", before)
        found.append(Block(line, marker.group(1) if marker else "", m.group(1)))
    return found


def test_every_shell_block_is_tested_or_says_why_not() -> None:
    found = blocks()
    assert len([b for b in found if b.marker.startswith("tested")]) >= 10
    for b in found:
        assert b.marker.startswith(MARKERS), f"{DOC.name}:{b.line}: ```sh block without a marker ({MARKERS})"
        if b.marker.startswith(("needs a real cluster", "covered elsewhere")):
            assert ":" in b.marker, f"{DOC.name}:{b.line}: say why it is not run here, or where it is"


def test_the_columns_explained_are_the_crds() -> None:
    text = DOC.read_text()
    for crd, section in (("taskadapters", "| Column | Meaning |"), ("basemodelreleases", "`bmr` is the short name")):
        doc = yaml.safe_load((ROOT / "crds" / f"{crd}.relora.dev.yaml").read_text())
        columns = [c["name"].upper() for c in doc["spec"]["versions"][0]["additionalPrinterColumns"]]
        part = text[text.index(section) :][:4000]
        for column in columns:
            assert f"`{column}`" in part, f"{crd}: column {column} is not explained"


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~1 min on an idle 2-core machine; the CPU-bound `relora readapt` step slows under load
def test_the_journey(
    control_plane: Cluster,
    kubectl: CliRunner,
    kubeconfig_path: Path,
    s3_server: Any,
    test_kubelet: Any,
    tmp_path: Path,
) -> None:
    if control_plane.is_real:
        pytest.skip("the operator's Deployment runs as a local process: needs the test kubelet")
    work = tmp_path / "clone"
    work.mkdir()
    for name in ("charts", "examples"):
        (work / name).symlink_to(ROOT / name)
    values = tmp_path / "test-cluster-values.yaml"
    values.write_text(yaml.safe_dump(chart_values()))
    state = tmp_path / "state.sh"
    state.write_text("")
    env = {
        "PATH": os.pathsep.join(
            [str(kubectl.binary.parent), str(helm_bin().parent), str(Path(sys.executable).parent), "/usr/bin:/bin"]
        ),
        "HOME": str(tmp_path / "home"),
        "KUBECONFIG": str(kubeconfig_path),
        "HELM_CACHE_HOME": str(tmp_path / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm" / "config"),
        "HELM_DATA_HOME": str(tmp_path / "helm" / "data"),
        "RELORA_TEST_VALUES": str(values),
        "BUCKET": s3_server.bucket,
        "S3_ENDPOINT": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "LANG": "C.UTF-8",
    }
    prelude = (
        "set -a -euo pipefail\n"
        f"source {state}\n"
        'helm() { case "$1" in install|upgrade) command helm "$@" -f "$RELORA_TEST_VALUES";; '
        '*) command helm "$@";; esac; }\n'
    )
    transcript: list[str] = []
    first_rollout: set[str] = set()
    _clean(kubectl)
    adopt_crds(kubectl, RELEASE, SYSTEM)
    try:
        for b in blocks():
            if not b.marker.startswith("tested"):
                continue
            script = prelude + b.code + f"\nexport -p > {state}\n"
            watch = b.marker == "tested: watch"
            t0 = time.monotonic()
            result = subprocess.run(
                ["timeout", "--signal=INT", str(WATCH_SECONDS), "bash", "-c", script]
                if watch
                else ["bash", "-c", script],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            took = time.monotonic() - t0
            transcript.append(f"--- {DOC.name}:{b.line} ({took:.1f} s, exit {result.returncode})\n{b.code}"
                              f"{result.stdout}{result.stderr}")  # fmt: skip
            ok = result.returncode == 0 or (watch and result.returncode in (124, 130))
            assert ok, "\n".join(transcript[-3:])
            _check(b, result.stdout)
            if "get basemodelreleases -n ml-team -o wide" in b.code:
                first_rollout = _adaptation_jobs(kubectl)
            elif b.code.startswith("kubectl apply -n ml-team -f examples/basemodelrelease-v2.yaml\nkubectl wait"):
                # Re-applying the release after the rollback creates a new object (a new uid, so a new release
                # identity, issue 12): every adapter is re-adapted by a new Job; the first rollout's Jobs stay.
                jobs = _adaptation_jobs(kubectl)
                assert first_rollout <= jobs and len(jobs - first_rollout) == len(first_rollout), (first_rollout, jobs)
    finally:
        print("\n".join(transcript))
        (tmp_path / "transcript.txt").write_text("\n".join(transcript))
        _clean(kubectl)


def _check(b: Block, out: str) -> None:
    """What each step must show, beyond exiting 0."""
    code = b.code
    if code.startswith("kubectl get taskadapters -n ml-team -w"):
        assert re.search(r"^NAME\s+FAMILY\s+RELEASE\s+READY\s+REASON\s+QUALITY\s+THRESHOLD\s+TTR\s+AGE", out, re.M), out
        assert "sentiment" in out and "text-to-sql" in out
    elif "basemodelrelease-v1.yaml" in code:
        assert out.count("TrainedOnRelease") == 2, out
    elif "get basemodelreleases -n ml-team -o wide" in code:
        assert re.search(r"llama-3\.1-8b-v2\s+llama-3\.1-8b\s+v2\s+Complete\s+2\s+2", out), out
        assert out.count("Readapted") == 2, out
    elif "sentiment-strict" in code and "kubectl apply" in code:
        assert re.search(r"sentiment-strict\s+\S+\s+v1\s+False\s+BelowThreshold", out), out
        assert re.search(r"sentiment-typo\s+\S+\s+v1\s+False\s+BadInput", out), out
    elif "describe taskadapter sentiment-typo" in code:
        assert "Ready=False BadInput" in out and "missing-train.jsonl" in out, out
        assert "Warning" in out and "BadInput" in out.split("Events:")[-1], out
    elif code.startswith("JOB="):
        assert '"exit_code": 2' in out and '"status": "error"' in out, out
    elif "delete basemodelrelease llama-3.1-8b-v2" in code:
        assert out.count("TrainedOnRelease") == 2 and " v1 " in out, out
    elif code.startswith("GOOD="):
        assert re.search(r"^s3://.+/adapters/ml-team/sentiment/v2/.+/$", out.strip().splitlines()[-1]), out
    elif "name: llama-3.1-8b-v3" in code:
        # kubectl relora status: the release Complete with its canary passed and both adapters Ready on v3
        assert re.search(r"Complete", out) and re.search(r"[Cc]anary.*Passed", out), out
        assert re.search(r"^sentiment\s+Ready", out, re.M) and re.search(r"^text-to-sql\s+Ready", out, re.M), out
        # pinned back: the artifact of v2 served again, under the pin
        pinned = next(line for line in out.splitlines() if line.startswith("v2 "))
        assert re.search(r"^v2 v2 s3://.+/", pinned), out
        # the serving ConfigMap followed: v3's artifact once Ready, v2's (the pinned one) after the rollback
        served = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("served: ")]
        assert len(served) == 2 and "/sentiment/v3/" in served[0] and served[1] == pinned.split()[-1], out
    elif "relora readapt" in code:
        assert '"status": "ready"' in out and "adapter_model.safetensors" in out and "result.json" in out, out
    elif code.startswith("helm uninstall"):
        assert "taskadapters.relora.dev" in out, out


def _adaptation_jobs(kubectl: CliRunner) -> set[str]:
    names = kubectl("get", "jobs", "-n", TEAM, "-o", "name").stdout.split()
    return {n for n in names if n.startswith(("job.batch/ra-sentiment-v2-", "job.batch/ra-text-to-sql-v2-"))}


def _clean(kubectl: CliRunner) -> None:
    subprocess.run(
        [str(helm_bin()), f"--kubeconfig={kubectl.base_args[0].split('=', 1)[1]}", "uninstall", RELEASE, "-n", SYSTEM,
         "--wait"],
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    for ns in (TEAM, SYSTEM):
        kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=120s", check=False)
