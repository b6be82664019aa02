"""Inference speed of hvit's ``pvt_v2_b0`` against timm's, with identical weights, in one process.

    python -m hvit.bench model [--repeats 7] [--size 224]

Reports batch-1 latency and batch-32 throughput for both, their ratio (hvit / timm: < 1 is faster),
and hvit's explicit (inspectable) attention path against its fused path.
"""

from __future__ import annotations

import argparse

import torch

from hvit.bench import alternating_medians
from hvit.layers import MultiScaleAttention


def _set_fused(model: torch.nn.Module, fused: bool) -> None:
    for m in model.modules():
        if isinstance(m, MultiScaleAttention):
            m.fused_attn = fused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvit.bench model", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pvt_v2_b0", help="a pvt_v2_* variant that timm also has")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per variant (median reported)")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the throughput run")
    args = parser.parse_args(argv)

    import timm

    import hvit

    torch.manual_seed(0)
    reference = timm.create_model(args.model).eval()
    ours = hvit.create_model(args.model).eval()
    hvit.load_timm_state_dict(ours, reference.state_dict())
    explicit = hvit.create_model(args.model).eval()
    explicit.load_state_dict(ours.state_dict())
    _set_fused(explicit, False)

    print(
        f"{args.model} at {args.size}px on {torch.get_num_threads()} CPU threads, torch {torch.__version__}, "
        f"timm {timm.__version__}; median of {args.repeats} alternating runs"
    )
    rows = []
    for batch in (1, args.batch):
        x = torch.randn(batch, 3, args.size, args.size)
        with torch.inference_mode():
            torch.testing.assert_close(ours(x), reference(x), atol=1e-4, rtol=0)
            t = alternating_medians(
                {
                    "hvit": lambda x=x: ours(x),
                    "timm": lambda x=x: reference(x),
                    "explicit": lambda x=x: explicit(x),
                },
                repeats=args.repeats,
            )
        rows.append((batch, t))
        print(
            f"batch {batch:>3}: hvit {t['hvit'] * 1e3:8.1f} ms ({batch / t['hvit']:6.1f} img/s)  "
            f"timm {t['timm'] * 1e3:8.1f} ms ({batch / t['timm']:6.1f} img/s)  "
            f"hvit/timm {t['hvit'] / t['timm']:.3f}  explicit/fused {t['explicit'] / t['hvit']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
