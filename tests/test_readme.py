"""The README's commands and Python example are the ones that work."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd ", "rm ", "export "))
    ]
    assert len(ci_lines) == 1
    assert ci_lines[0] in [b.strip() for b in readme_blocks("bash")]
    assert ci_lines[0].endswith("python -m pytest")


def test_the_python_api_example_runs(tmp_path, monkeypatch):
    code = readme_blocks("python")[0]
    # The example trains 3 epochs on the embedded digits; keep its output in a temp folder.
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    run = namespace["run"]
    assert namespace["digits"].shape == (16, 28, 28)
    assert namespace["loc"].shape == (100, 2)
    assert run.config.model.prior == "learned_laplace"
    exec(compile(readme_blocks("python")[1], "README.md", "exec"), namespace)
