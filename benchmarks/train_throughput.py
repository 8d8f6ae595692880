"""Training and sampling throughput (images/s) of sdeflow's U-Net against diffusers'
``UNet2DModel`` with (nearly) the same parameter count, side by side in one run.

Configurations:
* ``digits``: 1×8×8, the default digits U-Net (CPU-sized), fp32.
* ``cifar``: 3×32×32, a DDPM++-sized network (128 channels, ×(1, 2, 2), 2 blocks, attention at
  16×16); on a GPU also with bf16 autocast and ``torch.compile`` (both models, same settings).

Training throughput: a full AdamW step (forward, backward, update) on the EDM loss's input;
sampling throughput: forward passes under ``torch.no_grad`` (what a sampler pays per NFE).
The diffusers model is sized by searching its base width for the closest parameter count.

    python benchmarks/train_throughput.py --markdown --out docs/throughput_results.jsonl
"""
from __future__ import annotations

import time

import torch
from common import run_benchmark

from sdeflow.models import UNet

CONFIGS = {
    "digits": dict(shape=(1, 8, 8), batch=64, ours=dict(channels=32, channel_mult=(1, 2),
                                                        num_res_blocks=1, attn_resolutions=(4,))),
    "cifar": dict(shape=(3, 32, 32), batch=128, ours=dict(channels=128, channel_mult=(1, 2, 2),
                                                          num_res_blocks=2, attn_resolutions=(16,))),
}


def _params(m):
    return sum(p.numel() for p in m.parameters())


def diffusers_unet(ours_kw, shape, target):
    """UNet2DModel with the same levels, blocks and attention placement, base width chosen
    to match ``target`` parameters."""
    from diffusers import UNet2DModel
    mult, res, attn = ours_kw["channel_mult"], shape[-1], set(ours_kw["attn_resolutions"])
    down, up, r = [], [], res
    for _ in mult:
        down.append("AttnDownBlock2D" if r in attn else "DownBlock2D")
        r //= 2
    r = res // 2 ** (len(mult) - 1)
    for _ in mult:
        up.append("AttnUpBlock2D" if r in attn else "UpBlock2D")
        r *= 2
    best = None
    for c in range(8, 513, 8):
        m = UNet2DModel(sample_size=res, in_channels=shape[0], out_channels=shape[0],
                        block_out_channels=tuple(c * k for k in mult),
                        layers_per_block=ours_kw["num_res_blocks"], down_block_types=tuple(down),
                        up_block_types=tuple(up), norm_num_groups=8,
                        attention_head_dim=min(64, c))
        gap = abs(_params(m) - target)
        if best is None or gap < best[0]:
            best = (gap, m)
        if _params(m) > target:
            break
    return best[1]


class _DiffusersNet(torch.nn.Module):
    """net(x, c) calling a UNet2DModel, so both models see the same call."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, c):
        return self.unet(x, c).sample


def _time(fn, iters, device):
    for _ in range(3):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters


def measure(net, shape, batch, device, precision, compile_, iters, channels_last=False):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device, memory_format=fmt)
    run = torch.compile(net, dynamic=False) if compile_ else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, *shape, device=device).contiguous(memory_format=fmt)
    c = torch.rand(batch, device=device)
    dtype = dict(fp32=None, bf16=torch.bfloat16)[precision]

    def amp():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def train_step():
        with amp():
            loss = (run(x, c).float() - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def forward():
        with amp():
            run(x, c)

    return batch / _time(train_step, iters, device), batch / _time(forward, iters, device)


def body(emit, a):
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    configs = a.configs or (["cifar"] if device.type == "cuda" else ["digits", "cifar"])
    settings = [("fp32", False)]
    if device.type == "cuda":
        settings += [("bf16", False), ("bf16", True)]
    if a.settings:
        settings = [(s.split("+")[0], s.endswith("+compile")) for s in a.settings]
    for name in configs:
        cfg = CONFIGS[name]
        shape, batch = cfg["shape"], cfg["batch"] if device.type == "cuda" or name == "digits" else 16
        for precision, compile_ in settings:
            torch.manual_seed(0)
            ours = UNet(in_channels=shape[0], resolution=shape[-1], **cfg["ours"])
            theirs = _DiffusersNet(diffusers_unet(cfg["ours"], shape, _params(ours)))
            res = {}
            for label, net in (("sdeflow", ours), ("diffusers", theirs)):
                iters = a.iters if device.type == "cuda" else (20 if name == "digits" else 3)
                res[label] = measure(net, shape, batch, device, precision, compile_, iters,
                                     a.channels_last)
                res[label + "_params"] = _params(net)
            emit(dict(config=name, device=torch.cuda.get_device_name(device) if device.type == "cuda"
                      else "cpu", precision=precision, compile=compile_, channels_last=a.channels_last, batch=batch,
                      params_sdeflow=res["sdeflow_params"], params_diffusers=res["diffusers_params"],
                      train_img_s_sdeflow=round(res["sdeflow"][0], 1),
                      train_img_s_diffusers=round(res["diffusers"][0], 1),
                      sample_img_s_sdeflow=round(res["sdeflow"][1], 1),
                      sample_img_s_diffusers=round(res["diffusers"][1], 1),
                      train_ratio=round(res["sdeflow"][0] / res["diffusers"][0], 3),
                      sample_ratio=round(res["sdeflow"][1] / res["diffusers"][1], 3)))


def markdown(rows):
    out = ["| config | device | precision | compile | channels last | batch | params ours / diffusers | train img/s ours / diffusers (ratio) | forward img/s ours / diffusers (ratio) |",
           "|---|---|---|---|---|---:|---|---|---|"]
    for r in rows:
        out.append(f"| {r['config']} | {r['device']} | {r['precision']} | {r['compile']} "
                   f"| {r.get('channels_last', False)} | {r['batch']} "
                   f"| {r['params_sdeflow'] / 1e6:.2f} M / {r['params_diffusers'] / 1e6:.2f} M "
                   f"| {r['train_img_s_sdeflow']:.0f} / {r['train_img_s_diffusers']:.0f} (**{r['train_ratio']:.2f}×**) "
                   f"| {r['sample_img_s_sdeflow']:.0f} / {r['sample_img_s_diffusers']:.0f} (**{r['sample_ratio']:.2f}×**) |")
    return "\n".join(out)


def extra(ap):
    ap.add_argument("--device", default=None)
    ap.add_argument("--configs", nargs="*", choices=sorted(CONFIGS))
    ap.add_argument("--iters", type=int, default=20, help="timed iterations on a GPU")
    ap.add_argument("--settings", nargs="*", help="e.g. fp32 bf16 bf16+compile")
    ap.add_argument("--channels-last", action="store_true",
                    help="channels-last memory format for both models and their inputs")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, extra)
