"""Choosing the networks' compute precision (no Keras needed)."""

from __future__ import annotations

import pytest

from napari_blendphot.errors import InputError
from napari_blendphot.models import precision


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n")
    assert precision.cpu_bfloat16_flags.__wrapped__(cpuinfo) == ("avx512_bf16",)
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2\n")
    assert precision.cpu_bfloat16_flags.__wrapped__(cpuinfo) == ()
    assert precision.cpu_bfloat16_flags.__wrapped__(tmp_path / "missing") == ()


@pytest.mark.parametrize("flags, expected", [(("avx512_bf16",), "bfloat16"), (("amx_bf16",), "bfloat16"), ((), "float32")])
def test_auto_picks_bfloat16_only_where_the_cpu_has_it(monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "cpu_bfloat16_flags", lambda: flags)
    assert precision.resolve_precision("auto") == expected
    assert precision.resolve_precision("float32") == "float32"
    assert precision.resolve_precision("BFloat16") == "bfloat16"


@pytest.mark.parametrize("bad", ["float16", "", None, 16])
def test_unknown_precision_is_refused_with_the_option_named(bad):
    with pytest.raises(InputError) as info:
        precision.resolve_precision(bad, source="option precision of unet")
    message = str(info.value)
    assert "option precision of unet" in message and "float32, bfloat16, auto" in message


def test_one_precision_vocabulary_for_inference_and_training():
    """Training said 'mixed_bfloat16' where the library says 'bfloat16': one name now, the old one still read."""
    from napari_blendphot.models.precision import canonical_precision, keras_policy
    from napari_blendphot.training.config import load_config

    assert canonical_precision("mixed_bfloat16") == canonical_precision("bfloat16") == "bfloat16"
    assert keras_policy("bfloat16") == "mixed_bfloat16" and keras_policy("float32") == "float32"
    with pytest.raises(InputError, match="not a precision"):
        canonical_precision("half")
    assert load_config("tiny_blend2flux", {"training.precision": "mixed_bfloat16"})["training"]["precision"] == \
        "bfloat16"
    assert load_config("tiny_blend2flux", {"training.precision": "bfloat16"})["training"]["precision"] == "bfloat16"


@pytest.mark.parametrize("capability, expected", [((9, 0), "bfloat16"), ((8, 0), "bfloat16"), ((7, 5), "float32"),
                                                 (None, "float32")])
def test_the_default_is_bfloat16_only_on_a_gpu_with_native_bfloat16(monkeypatch, capability, expected):
    monkeypatch.setattr(precision, "_loaded_backend_gpu", lambda: capability)
    monkeypatch.setattr(precision, "cpu_bfloat16_flags", lambda: ())
    assert precision.default_precision() == expected
    assert precision.resolve_precision("auto") == expected
    assert precision.resolve_precision("float32") == "float32"
    assert precision.keras_device() == ("cpu" if capability is None else "gpu")


def test_no_backend_loaded_means_cpu_without_importing_one():
    import sys

    loaded = set(sys.modules)
    assert precision.keras_device() in ("cpu", "gpu")
    assert not {"jax", "tensorflow", "torch", "keras"} & (set(sys.modules) - loaded)
