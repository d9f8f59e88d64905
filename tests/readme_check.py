"""Run the README's commands as written, against the demo's network (`make readme-check`).

Every line of a ```sh block that starts with `gauntlet ` (or sets a shell variable the next lines
use) is run in one bash session from the repository's root, with the project's environment on
PATH; each must exit 0 (or the status the README says it returns, written as a trailing
`# exit N`). Commands that start servers, need a real chain or take the whole demo again are not
run here, and the checker prints which lines it skipped and why, so nothing is skipped silently.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
EXIT = re.compile(r"#\s*exit (\d+)\s*$")
PLACEHOLDER = re.compile(r"<\w[^>]*>")
RUN = ("gauntlet ", "R=")
NOT_ON_THE_DEMO = {
    "mainnet.toml": "needs a bittensor chain, a wallet and a GPU",
    "localnet run": "mines more windows: it would change the network the next lines read",
}
NOT_HERE = {
    "make ": "make targets run the whole demo or test suite; CI runs them itself",
    "prefect ": "starts or talks to a Prefect server (tests/deployments covers these commands)",
    "python -m deployments": "serves deployments until stopped (tests/deployments covers it)",
    "export ": "environment for a server session",
    ". .venv": "activates the environment (the checker puts it on PATH)",
}


def commands(readme: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(lines to run, (line, why not) skipped) from the README's sh blocks, in order."""
    run, skipped = [], []
    for block in BLOCK.findall(readme.read_text()):
        for raw in block.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            reason = next((w for part, w in NOT_ON_THE_DEMO.items() if part in line), None)
            if reason is None and PLACEHOLDER.search(line):
                reason = "a placeholder the reader fills in"
            if line.startswith(RUN) and reason is None:
                run.append(line)
                continue
            if reason is not None:
                skipped.append((line, reason))
                continue
            why = next((w for prefix, w in NOT_HERE.items() if line.startswith(prefix)), "not a gauntlet command")
            skipped.append((line, why))
    return run, skipped


def check(readme: Path = ROOT / "README.md") -> int:
    run, skipped = commands(readme)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"}
    failures = 0
    shell_vars: list[str] = []
    for line in run:
        if line.startswith("R="):
            shell_vars.append(line)
            continue
        want = int(m.group(1)) if (m := EXIT.search(line)) else 0
        script = "\n".join([*shell_vars, line])
        proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
        ok = proc.returncode == want
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} exit {proc.returncode} (want {want}): {line}")
        if not ok:
            print("      " + (proc.stderr or proc.stdout)[-1500:].replace("\n", "\n      "))
    for line, why in skipped:
        print(f"skip {line}  ({why})")
    print(f"{len(run) - len(shell_vars) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(check())
