"""Export a torch encoder + head into a verified bundle (needs ``edgecl[cloud]``).

The encoder is captured once with ``torch.export`` (the ``encoder.pt2`` mirror the cloud
differentiates through) and that same program is converted by the dynamo ONNX exporter
into ``encoder.onnx`` (what the device runs). Export then runs ONNX Runtime, the saved
program and eager torch side by side on random and real inputs and refuses to write a
bundle whose outputs differ by more than ``tolerance``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecl._exceptions import ConfigError, ExportError, require
from edgecl.bundle._bundle import ModelBundle, write_bundle
from edgecl.bundle._manifest import InputSpec
from edgecl.heads import Head, LinearHead

MAX_BATCH = 4096


def export_bundle(
    encoder: Any,
    head: Any,
    example_input: Any,
    out_dir: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    real_inputs: Any = None,
    tolerance: float = 1e-4,
    n_random: int = 16,
    name: str | None = None,
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    seed: int = 0,
) -> ModelBundle:
    """Export ``encoder`` (a torch module: images -> features) and ``head`` as a bundle.

    Parameters
    ----------
    encoder : torch.nn.Module
        Maps ``(N, C, H, W)`` float32 images (normalised by ``mean``/``std`` if given)
        to ``(N, D)`` features. Put in eval mode for export.
    head : torch.nn.Linear or edgecl.heads.Head
        The classifier on the features; a torch ``Linear`` becomes a numpy ``LinearHead``.
    example_input : tensor or array
        One sample ``(C, H, W)`` or a batch ``(N, C, H, W)``; fixes the per-sample shape.
    out_dir : path
        Bundle directory to create (atomically).
    class_names, value_range, mean, std
        The input spec. When ``mean``/``std`` are given the normalisation is baked into the
        exported graph, so devices feed raw values in ``value_range``.
    real_inputs : tensor or array, optional
        Real samples ``(N, C, H, W)`` used in the parity check beside random ones; the
        first 64 (those within ``value_range``) also become the bundle's ``probe.npz``, the
        fixed inputs devices try every candidate update on.
    tolerance : float
        Largest accepted absolute difference between ONNX Runtime and torch outputs.

    Raises
    ------
    ExportError
        When the encoder cannot be exported or the exported graphs disagree with torch.
    """
    torch = require("torch", "cloud")
    require("onnxscript", "cloud")
    example = _as_batch(torch, example_input)
    sample_shape = tuple(int(d) for d in example.shape[1:])
    channels = sample_shape[0]
    mean_t = tuple(float(v) for v in (mean if mean is not None else [0.0] * channels))
    std_t = tuple(float(v) for v in (std if std is not None else [1.0] * channels))
    spec = InputSpec.from_dict({
        "shape": list(sample_shape), "dtype": "float32", "layout": "NCHW",
        "value_range": list(value_range), "mean": list(mean_t), "std": list(std_t),
    }) if len(sample_shape) == 3 else None
    if spec is None:
        raise ConfigError(f"example_input must be (C, H, W) or (N, C, H, W), got {example.shape}")
    model = _with_normalisation(torch, encoder, mean_t, std_t, channels).eval()
    np_head = _to_numpy_head(torch, head)
    names = tuple(class_names) if class_names is not None else tuple(
        str(i) for i in range(np_head.num_classes))

    program, onnx_bytes, pt2_bytes = _export_graphs(torch, model, example)
    real = None if real_inputs is None else _as_batch(torch, real_inputs)
    check = _parity_check(torch, model, program, onnx_bytes, np_head, spec, real,
                          n_random=n_random, tolerance=tolerance, seed=seed)
    return write_bundle(
        out_dir, name=name or Path(out_dir).name, encoder_onnx=onnx_bytes,
        encoder_pt2=pt2_bytes, head=np_head, input_spec=spec, class_names=names,
        export_check=check, extra=extra, overwrite=overwrite, probe=_probe(real, spec))


def _probe(real: Any, spec: InputSpec) -> Any:
    """Up to 64 finite real inputs within the value range, or None."""
    if real is None:
        return None
    x = real.detach().cpu().numpy().astype(np.float32)[:64]
    lo, hi = spec.value_range
    flat = x.reshape(len(x), -1)
    keep = np.isfinite(flat).all(axis=1) & (flat.min(axis=1) >= lo) & (flat.max(axis=1) <= hi)
    return x[keep] if keep.any() else None


def _as_batch(torch: Any, x: Any) -> Any:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not torch.is_tensor(x) else x)
    t = t.detach().to(torch.float32)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ConfigError(f"inputs must be (C, H, W) or (N, C, H, W), got {tuple(t.shape)}")
    return t


def _with_normalisation(torch: Any, encoder: Any, mean: tuple[float, ...],
                        std: tuple[float, ...], channels: int) -> Any:
    if all(m == 0.0 for m in mean) and all(s == 1.0 for s in std):
        return encoder

    class Normalised(torch.nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            shape = (1, len(mean), 1, 1) if len(mean) == channels else (1, 1, 1, 1)
            self.register_buffer("mean", torch.tensor(mean).reshape(shape))
            self.register_buffer("inv_std", 1.0 / torch.tensor(std).reshape(shape))
            self.encoder = encoder

        def forward(self, x: Any) -> Any:
            return self.encoder((x - self.mean) * self.inv_std)

    return Normalised()


def _to_numpy_head(torch: Any, head: Any) -> Head:
    if isinstance(head, Head):
        return head
    if isinstance(head, torch.nn.Linear):
        bias = head.bias if head.bias is not None else torch.zeros(head.out_features)
        return LinearHead(head.weight.detach().cpu().numpy(), bias.detach().cpu().numpy())
    raise ConfigError(
        f"head must be a torch.nn.Linear or an edgecl.heads.Head, got {type(head).__name__}")


@contextlib.contextmanager
def _quiet(torch: Any) -> Iterator[None]:
    """Silence the exporter's progress chatter and known harmless warnings."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                                "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _export_graphs(torch: Any, model: Any, example: Any) -> tuple[Any, bytes, bytes]:
    """Capture with torch.export, then convert that program to ONNX. Returns both as bytes."""
    traced_example = example if example.shape[0] > 1 else example.repeat(2, 1, 1, 1)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with _quiet(torch), torch.no_grad():
            program = torch.export.export(model, (traced_example,),
                                          dynamic_shapes=({0: batch},))
            buf = io.BytesIO()
            torch.export.save(program, buf)
            onnx_program = torch.onnx.export(program, (traced_example,), dynamo=True,
                                             verbose=False)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "encoder.onnx"
                onnx_program.save(str(path))
                if any(p.name != "encoder.onnx" for p in Path(tmp).iterdir()):
                    raise ExportError("the encoder needs external ONNX data (> 2 GB)")
                onnx_bytes = path.read_bytes()
    except ExportError:
        raise
    except Exception as exc:  # the exporters raise many unrelated types
        raise ExportError(f"torch.export / ONNX export failed: {exc}") from exc
    return program, onnx_bytes, buf.getvalue()


def _parity_check(torch: Any, model: Any, program: Any, onnx_bytes: bytes, head: Head,
                  spec: InputSpec, real: Any, *, n_random: int, tolerance: float,
                  seed: int) -> dict[str, Any]:
    ort = require("onnxruntime", "device")
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    gen = torch.Generator().manual_seed(seed)
    lo, hi = spec.value_range
    batches = [lo + (hi - lo) * torch.rand((n, *spec.shape), generator=gen)
               for n in (1, max(1, n_random - 1))]
    if real is not None:
        if tuple(real.shape[1:]) != spec.shape:
            raise ConfigError(f"real_inputs have shape {tuple(real.shape[1:])}, "
                              f"expected {spec.shape}")
        batches.append(real)
    worst = {"onnx_vs_torch": 0.0, "pt2_vs_torch": 0.0, "head_logits": 0.0}
    loaded = program.module()
    for x in batches:
        with torch.no_grad():
            ref = model(x)
            mirror = loaded(x)
        if ref.ndim != 2:
            raise ExportError(f"encoder must output (N, D) features, got {tuple(ref.shape)}")
        if ref.shape[1] != head.feature_dim:
            raise ExportError(f"encoder outputs {ref.shape[1]} features, head takes "
                              f"{head.feature_dim}")
        got = session.run(None, {input_name: x.numpy()})[0]
        ref_np = ref.numpy()
        worst["onnx_vs_torch"] = max(worst["onnx_vs_torch"], float(np.abs(got - ref_np).max()))
        worst["pt2_vs_torch"] = max(worst["pt2_vs_torch"],
                                    float((mirror - ref).abs().max()))
        worst["head_logits"] = max(worst["head_logits"], float(np.abs(
            head.logits(got) - head.logits(ref_np)).max()))
    bad = {k: v for k, v in worst.items() if not v <= tolerance}
    if bad:
        raise ExportError(
            f"exported encoder disagrees with torch beyond tolerance {tolerance:g}: "
            + ", ".join(f"{k} max abs diff {v:.3g}" for k, v in bad.items()))
    return {"tolerance": tolerance, "max_abs_diff": worst,
            "n_random": int(sum(b.shape[0] for b in batches[:2])),
            "n_real": 0 if real is None else int(real.shape[0])}
