"""The int8 artifact's quantisation report (``artifact.json`` → ``quantization``) as a table."""

from __future__ import annotations


def quantization_table(quantization: dict):
    """Per linear layer: int8 or kept fp32, activation scale / zero point, and its
    sensitivity (dev-split F1 drop and logits MSE when only it is int8)."""
    from rich.table import Table

    from pipelines.compile.int8 import KERNELS

    budget = quantization.get("budget") or {}
    calib = quantization.get("calibration") or {}
    kernel = quantization.get("kernel", "")
    mnemonic = KERNELS[kernel].instruction if kernel in KERNELS else None  # older artifacts name no kernel of these
    title = (
        f"int8: {quantization.get('int8_layers', 0)} linear layers int8, {len(quantization.get('keep_fp32') or [])} kept fp32 · "
        f"calibration {calib.get('mode')} on {calib.get('sentences')} {calib.get('split')} sentences · "
        f"{kernel} kernel, {quantization.get('weight_bits', 8)}-bit weights"
        + (f" ({quantization.get(mnemonic, 0)} {mnemonic})" if mnemonic else "")
    )
    table = Table(title=title, title_justify="left")
    for col in ("layer", "K×N", "prec", "x scale", "zero", "ΔF1 alone", "logits MSE"):
        table.add_column(col, justify="left" if col in ("layer", "prec") else "right", no_wrap=col in ("layer", "prec"))
    for name, layer in (quantization.get("layers") or {}).items():
        sens = layer.get("sensitivity") or {}
        table.add_row(
            _short(name),
            f"{layer.get('K')}×{layer.get('N')}",
            "int8" if layer.get("int8") else ("fp32 kept" if layer.get("reason", "").startswith("kept") else "fp32 shape"),
            f"{layer['scale']:.4g}" if "scale" in layer else "—",
            str(layer.get("zero", "—")),
            f"{sens['f1_drop']:+.2f}" if "f1_drop" in sens else "—",
            f"{sens['logits_mse']:.2e}" if "logits_mse" in sens else "—",
        )
    if budget:
        table.caption = (
            f"{budget.get('split')} ({budget.get('sentences')} sentences, simulated): F1 {budget.get('f1_fp32', 0):.4f} fp32 → "
            f"{budget.get('f1_int8_simulated', 0):.4f} int8, budget {budget.get('max_f1_drop')} points; "
            f"argmax agreement {budget.get('argmax_agreement', 0):.4f}"
        )
        table.caption_justify = "left"
    return table


def _short(name: str) -> str:
    """bert.encoder.layer.0.attention.self.query -> 0.attn.query: fits an 80-column terminal."""
    name = name.removeprefix("bert.encoder.").removeprefix("layer.")
    return name.replace("attention.self.", "attn.").replace("attention.output.", "attn.out.").replace(".dense", "")
