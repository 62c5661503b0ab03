"""A script that starts the worker without `if __name__ == "__main__":` gets the fix in the message (issue 17)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

UNGUARDED = textwrap.dedent("""
    from napari_blendphot.deblend.engine import InferenceEngine
    from napari_blendphot.testing.stand_ins import toy_blends

    engine = InferenceEngine(["sep"])
    engine.run(toy_blends(2, seed=1))
""")


@pytest.mark.slow
def test_an_unguarded_script_is_told_to_guard_its_main_module(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("napari_blendphot.errors.WorkerError"), result.stderr
    assert "while starting" in last and 'if __name__ == "__main__":' in last
