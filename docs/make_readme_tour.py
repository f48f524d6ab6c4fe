"""Rerun the commands the README's tour shows and paste their output back (the README never shows stale output).

Each block in README.md between ``<!-- BEGIN output: $ COMMAND -->`` and ``<!-- END output -->`` is replaced
by a fenced block holding ``$ COMMAND`` and what it prints (stdout and stderr, 110 columns). A command may
end in ``| sed -n A,Bp`` to show an excerpt. Commands run in a scratch folder (so ``--out plan`` writes there),
with the installed ``vlmplan``. Run from the repository root::

    python docs/make_readme_tour.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- BEGIN output: \$ (?P<cmd>.+?) -->\n.*?<!-- END output -->", re.S)


def run(cmd: str, cwd: Path) -> str:
    env = dict(os.environ, COLUMNS="110", TERM="dumb", NO_COLOR="1")
    res = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    out = (res.stdout + res.stderr).rstrip("\n")
    return "\n".join(line.rstrip() for line in out.splitlines())


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    with tempfile.TemporaryDirectory() as tmp:
        def fill(m: re.Match[str]) -> str:
            cmd = m.group("cmd")
            print(f"$ {cmd}", file=sys.stderr)
            shown = cmd.split(" | sed ")[0]
            return (f"<!-- BEGIN output: $ {cmd} -->\n```text\n$ {shown}\n{run(cmd, Path(tmp))}\n```\n"
                    f"<!-- END output -->")

        new = BLOCK.sub(fill, text)
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
