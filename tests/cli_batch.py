"""Several ``recsys-mtl`` commands run one after another in one fresh process (``tests.train.conftest.cli_batch``):
each fresh interpreter spends ~4 s of CPU importing torch, fbgemm and torchrec, paid here once.

    python -m tests.cli_batch JOBS.json RESULTS_PREFIX

JOBS.json holds a list of argument lists. Each command is ``recsys_mtl.cli.main(argv)`` (what ``python -m
recsys_mtl`` runs) with ``sys.argv`` set as the shell would; its file descriptors 1 and 2 (so the output of
anything it starts, too) go to RESULTS_PREFIX.N.out / .err, and its exit code (as ``sys.exit(main())`` would
give it; 1 and the traceback on an uncaught exception) to RESULTS_PREFIX.N.code.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def run(argv: list[str]) -> int:
    """``recsys_mtl.cli.main(argv)`` with ``sys.argv`` as the shell would set it (restored after): its exit code
    as ``sys.exit(main())`` gives it to the shell (argparse's 2 on a usage error; 1, with the traceback on
    stderr, on an uncaught exception)."""
    from recsys_mtl.cli import main

    saved, sys.argv = sys.argv, [sys.argv[0], *argv]
    try:
        return main(argv)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:  # reported as the interpreter would, then the next command
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved


def batch() -> None:
    jobs, prefix = json.loads(Path(sys.argv[1]).read_text()), sys.argv[2]
    own = os.dup(1), os.dup(2)
    for i, argv in enumerate(jobs):
        with open(f"{prefix}.{i}.out", "wb") as out, open(f"{prefix}.{i}.err", "wb") as err:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(out.fileno(), 1), os.dup2(err.fileno(), 2)
            try:
                code = run(argv)
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(own[0], 1), os.dup2(own[1], 2)
        Path(f"{prefix}.{i}.code").write_text(str(code))


if __name__ == "__main__":
    batch()
