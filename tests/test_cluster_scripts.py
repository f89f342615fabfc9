"""The cluster launchers (scripts/slurm, scripts/k8s) and docs/CLUSTER.md stay runnable.

Nothing here starts Ray: the shell scripts are syntax-checked with ``bash -n``, the manifests
are parsed and checked for what KubeRay's RayJob needs, and every ``reproduce`` option the
files use must be one the CLI has; every ``ray start`` option must be one Ray's CLI lists.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
DOC = ROOT / "docs" / "CLUSTER.md"



def _reproduce_options() -> set[str]:
    """Every option string of the real `python -m lib reproduce` parser."""
    import argparse

    from lib.experiments.cli import add_arguments
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {flag for action in parser._actions for flag in action.option_strings}


REPRODUCE_OPTIONS = _reproduce_options()
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def shell_scripts() -> list[Path]:
    return sorted(p for p in SCRIPTS.rglob("*") if p.suffix in (".sh", ".sbatch"))


def manifests() -> dict[str, list[dict]]:
    return {p.name: list(yaml.safe_load_all(p.read_text()))
            for p in sorted((SCRIPTS / "k8s").glob("*.yaml"))}


def logical_lines(text: str) -> list[str]:
    """Lines with shell continuations (backslash-newline) joined."""
    return text.replace("\\\n", " ").splitlines()


def reproduce_invocations() -> dict[str, list[str]]:
    """Every command line that runs `lib reproduce`, by file: docs, scripts, the RayJob."""
    found: dict[str, list[str]] = {}
    sources = [DOC, *shell_scripts()]
    for path in sources:
        lines = [ln for ln in logical_lines(path.read_text())
                 if "lib reproduce" in ln or "${reproduce[@]}" in ln]
        found[str(path.relative_to(ROOT))] = lines
    for name, docs in manifests().items():
        for doc in docs:
            if doc.get("kind") == "RayJob":
                found[f"scripts/k8s/{name}"] = [doc["spec"]["entrypoint"]]
    return found


@pytest.fixture(scope="module")
def ray_start_options() -> set[str]:
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        pytest.skip(f"no ray CLI next to {sys.executable}")
    out = subprocess.run([str(ray), "start", "--help"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    options = set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", out, flags=re.M))
    assert {"--head", "--port", "--node-ip-address"} <= options, out[:500]
    return options


def test_every_shell_script_parses():
    scripts = shell_scripts()
    assert {p.name for p in scripts} >= {"reproduce.sbatch", "ray_node.sh"}
    bash = shutil.which("bash")
    for path in scripts:
        result = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_reproduce_options_are_the_clis():
    found = reproduce_invocations()
    assert found["docs/CLUSTER.md"] and found["scripts/slurm/reproduce.sbatch"]
    assert found["scripts/k8s/rayjob.yaml"]
    for where, lines in found.items():
        for line in lines:
            unknown = set(FLAG.findall(line.split("lib reproduce", 1)[-1])) - REPRODUCE_OPTIONS
            assert not unknown, f"{where}: unknown reproduce option(s) {sorted(unknown)} in: {line}"
    # the option table of the doc names only real options too
    table = [ln for ln in DOC.read_text().splitlines() if ln.startswith("| `--")]
    assert table
    for row in table:
        cell = row.split("|")[1]
        assert set(FLAG.findall(cell)) <= REPRODUCE_OPTIONS, row


def test_ray_start_options_exist(ray_start_options):
    used = set(FLAG.findall((SCRIPTS / "slurm" / "ray_node.sh").read_text()))
    assert "--node-ip-address" in used and "--temp-dir" in used
    assert used <= ray_start_options, sorted(used - ray_start_options)
    for docs in manifests().values():
        for doc in docs:
            if doc.get("kind") == "RayJob":
                cluster = doc["spec"]["rayClusterSpec"]
                groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
                for group in groups:
                    params = {f"--{k}" for k in group.get("rayStartParams", {})}
                    assert params <= ray_start_options, sorted(params - ray_start_options)
    # options the doc quotes in prose are the CLI's (reproduce's or ray start's)
    prose = re.sub(r"^```.*?^```", "", DOC.read_text(), flags=re.S | re.M)
    quoted = set()
    for span in re.findall(r"`([^`]*)`", prose):
        quoted |= set(FLAG.findall(span))
    assert quoted <= REPRODUCE_OPTIONS | ray_start_options, \
        sorted(quoted - REPRODUCE_OPTIONS - ray_start_options)


def test_rayjob_has_what_kuberay_needs():
    docs = manifests()
    (job,) = [d for d in docs["rayjob.yaml"] if d["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    assert "python -m lib reproduce" in spec["entrypoint"]
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    pods = [head["template"]["spec"]]
    assert cluster["workerGroupSpecs"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        pods.append(group["template"]["spec"])
    images = {c["image"] for pod in pods for c in pod["containers"]}
    images |= {c["image"] for c in spec["submitterPodTemplate"]["spec"]["containers"]}
    assert len(images) == 1, f"head, workers and submitter must run one image: {images}"
    assert cluster["rayVersion"] in images.pop()

    # every Ray pod mounts the same ReadWriteMany claim at the same path, and the entrypoint's
    # data and study folders are on it
    (pvc,) = [d for d in docs["pvc.yaml"] if d["kind"] == "PersistentVolumeClaim"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    mounts = set()
    for pod in pods:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in pod["volumes"] if "persistentVolumeClaim" in v}
        for container in pod["containers"]:
            for m in container["volumeMounts"]:
                if claims.get(m["name"]) == pvc["metadata"]["name"]:
                    mounts.add(m["mountPath"])
    assert len(mounts) == 1, mounts
    mount = mounts.pop()
    entry = spec["entrypoint"].split()
    for option in ("--out", "--data-root"):
        assert entry[entry.index(option) + 1].startswith(mount + "/"), option


def test_slurm_keeps_auth_on_and_ports_in_the_job_block(tmp_path):
    sbatch = (SCRIPTS / "slurm" / "reproduce.sbatch").read_text()
    assert "export RAY_AUTH_MODE=token" in sbatch and "RAY_AUTH_TOKEN_PATH" in sbatch
    assert '--address "$head_address"' in sbatch  # never `auto` on a shared node
    node_sh = SCRIPTS / "slurm" / "ray_node.sh"
    assert "--include-dashboard false" in node_sh.read_text()
    bases = set()
    for job_id in range(60):
        out = subprocess.run(["bash", str(node_sh), "gcs-port"], capture_output=True, text=True,
                             env={"SLURM_JOB_ID": str(job_id), "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        base = int(out.stdout)
        assert 1024 <= base and base + 199 < 32768  # below Linux's ephemeral ports
        bases.add(base)
    assert len(bases) == 60  # 60 disjoint blocks of 200
    bad = subprocess.run(["bash", str(node_sh), "stop"], capture_output=True, text=True,
                         env={"SLURM_JOB_ID": "1", "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
