"""Model FLOPs utilisation: the peak FLOP/s of a device kind, and MFU of a training throughput.

MFU = (real tokens/s) × (training FLOPs per token, ``icrl.model.info.train_flops_per_token``) /
(peak FLOP/s per device × devices). Real tokens are those of non-padding steps, so padding lowers
MFU as it lowers what training learns per second; rematerialisation is not counted (model FLOPs,
not hardware FLOPs).

Peaks are the vendors' dense figures (without structured sparsity) per JAX device, in TFLOP/s:

- NVIDIA: the datasheets of A100, A10, L4, L40S, H100 (SXM, PCIe, NVL), H200 (SXM, NVL) and GH200.
  ``float32`` is the TF32 tensor-core peak: at JAX's default matmul precision float32 matmuls run
  as TF32 on Ampere and later GPUs (docs.jax.dev, "Matmul precision").
- Google Cloud TPU system architecture pages: per chip for v4, v5e ("TPU v5 lite"), v5p
  ("TPU v5"), v6e ("TPU v6 lite"), where a JAX device is a chip; per TensorCore for v2 and v3,
  where it is a core. ``float32`` equals ``bfloat16``: at the default precision float32 matmuls
  are one bfloat16 pass on the MXU.
- CPUs have no table entry (their peak depends on the cores, their vector units and the clock):
  training logs no MFU there, and the benchmarks measure a matmul peak instead.
"""

from __future__ import annotations

# (lower-case substring of jax's device_kind, bfloat16 TFLOP/s, float32 TFLOP/s); the first match
# wins, so a more specific name comes before a name it contains ("h100 pcie" before "h100").
PEAK_TFLOPS: tuple[tuple[str, float | None, float | None], ...] = (
    ("h100 pcie", 756.0, 378.0),
    ("h100 nvl", 835.5, 417.5),
    ("h200 nvl", 835.5, 417.5),
    ("gh200", 989.4, 494.7),
    ("h100", 989.4, 494.7),  # SXM: "NVIDIA H100 80GB HBM3"
    ("h200", 989.4, 494.7),
    ("a100", 312.0, 156.0),
    ("a10g", None, None),  # AWS's A10 variant: no published figure (and "a10" would match it)
    ("a10", 125.0, 62.5),
    ("l40s", 362.1, 183.0),
    ("l4", 121.0, 60.0),
    ("tpu v2", 22.5, 22.5),
    ("tpu v3", 61.5, 61.5),
    ("tpu v4", 275.0, 275.0),
    ("tpu v5 lite", 197.0, 197.0),
    ("tpu v5e", 197.0, 197.0),
    ("tpu v5p", 459.0, 459.0),
    ("tpu v5", 459.0, 459.0),
    ("tpu v6 lite", 918.0, 918.0),
    ("tpu v6e", 918.0, 918.0),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Peak FLOP/s of one device of ``device_kind`` (``jax.devices()[0].device_kind``) for
    matmuls in ``dtype`` ("bfloat16" or "float32": a resolved dtype, ``ModelConfig.compute_dtype``);
    None when the table has no figure."""
    if dtype not in ("bfloat16", "float32"):
        raise ValueError(f"dtype {dtype!r}: expected bfloat16 or float32 (ModelConfig.compute_dtype)")
    kind = device_kind.lower()
    for name, bf16, fp32 in PEAK_TFLOPS:
        if name in kind:
            tflops = bf16 if dtype == "bfloat16" else fp32
            return None if tflops is None else tflops * 1e12
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None, devices: int) -> float | None:
    """Model FLOPs utilisation in [0, 1] of ``devices`` devices of ``peak`` FLOP/s each (None
    without a peak)."""
    if peak is None or peak <= 0 or devices < 1:
        return None
    return tokens_per_s * flops_per_token / (peak * devices)
