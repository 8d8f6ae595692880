"""Latent diffusion on 32×32 colour digits, on a CPU: autoencoders, latent vs pixel diffusion
at equal training wall-clock, and text-to-image with captions.

    python benchmarks/latent.py --runs /tmp/latent --markdown --out docs/latent_results.jsonl \\
        [--stages ae,compare,text] [--minutes-ae 4 --minutes-model 12 --minutes-text 15]

Stages (each trains what it needs in ``--runs`` unless there already, then measures):

* ``ae``: LDM's KL-regularised autoencoder (f = 4, 3 latent channels, widths 32/64/64 with no
  residual blocks: on a CPU it reaches 26 dB in 45 s where one residual block per level makes
  a step 5× slower) on ``color_digits`` and on
  ``photos`` (32×32 patches), and a VAE (f = 4, Gaussian decoder) on ``color_digits``: PSNR and
  SSIM of test reconstructions; for the VAE the ELBO and the IWAE bound (K = 64) in bits/dim
  of the images' 8-bit levels (uniform dequantisation: + log 127.5 nats per dimension for
  the map from [0, 256) to [−1, 1]).
* ``compare``: the same U-Net family (64 channels) trained for the same wall-clock on pixels
  (3×32×32) and on the autoencoder's rescaled latents (3×8×8); FDD (digits classifier on the
  ink, :mod:`sdeflow.metrics.color_digits`) and colour FD of 500 samples against the test
  split, with the floor between two data sets; sampling seconds per image at the same solver
  (Heun, 18 steps = 35 NFE) including the decoder.
* ``text``: a latent U-Net with a jointly trained text encoder and cross-attention on
  ``captioned_digits`` (10 % empty prompts), sampled for captions of the held-out colour pairs
  (never seen together in training) at CFG w ∈ {0, 1, 3}: digit accuracy (digits classifier
  on the ink) and colour accuracy (nearest palette colours of the measured foreground and
  background both right). Grids in docs/latent_*.png.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from common import run_benchmark

import sdeflow
from sdeflow.metrics.color_digits import color_digits_metrics
from sdeflow.training.engine import Trainer

DOCS = Path(__file__).resolve().parents[1] / "docs"
DATA32 = dict(resolution=32)
PIXEL_NET = dict(channels=64, channel_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[8])
LATENT_NET = dict(channels=64, channel_mult=[1, 2], num_res_blocks=1, attn_resolutions=[4])


def train_for(cfg, run: Path, minutes: float, extra: float = 0.0) -> dict:
    """Train ``cfg`` from scratch for ``minutes`` of wall-clock and checkpoint it; a run that
    already holds a checkpoint is kept, or trained ``extra`` minutes more (exact resume)."""
    if (run / "latest").is_file():
        if not extra:
            return dict(run=str(run), reused=True)
        st, t0 = Trainer.load(run), time.perf_counter()
        first = st.step
        while time.perf_counter() - t0 < 60 * extra:
            st.train_step()
        st.save(run)
        return dict(run=str(run), steps=st.step, resumed_from=first,
                    extra_train_seconds=round(time.perf_counter() - t0, 1))
    st, t0 = Trainer(cfg), time.perf_counter()
    losses = []
    while time.perf_counter() - t0 < 60 * minutes and st.step < cfg.steps:
        losses.append(float(st.train_step()))
    st.save(run)
    return dict(run=str(run), steps=st.step, train_seconds=round(time.perf_counter() - t0, 1),
                final_loss=round(sum(losses[-50:]) / max(1, len(losses[-50:])), 5))


def ae_config(data: str, kind: str, data_kwargs: dict, **kw):
    from sdeflow.training.autoencoder import AutoencoderConfig
    return AutoencoderConfig(data=data, data_kwargs=data_kwargs, autoencoder=kind,
                             downsample=4, latent_channels=3,
                             autoencoder_kwargs=dict(channels=32, num_res_blocks=0, **kw),
                             steps=10**6, batch_size=32, lr=2e-3, warmup=50, ema_decay=0.995,
                             ckpt_every=10**6, tensorboard=False)


def stage_ae(emit, a):
    from sdeflow.autoencoders import elbo, iwae
    from sdeflow.metrics import psnr, ssim
    jobs = [("kl_color_digits", "color_digits", "kl", DATA32),
            ("kl_photos", "photos", "kl", dict(size=32, downscale=2)),
            ("vae_color_digits", "color_digits", "vae", DATA32)]
    for name, data, kind, dkw in jobs:
        run = Path(a.runs) / name
        info = train_for(ae_config(data, kind, dkw), run, a.minutes_ae)
        ae, _ = sdeflow.load(run, kind="autoencoder")
        test = sdeflow.data.get_data(data, split="test", **dkw).x[:500]
        with torch.no_grad():
            rec = ae.decode(ae.encode(test)).clamp(-1, 1)
            row = dict(stage="ae", name=name, data=data, autoencoder=kind, **info,
                       psnr=round(psnr(rec, test).mean().item(), 3),
                       ssim=round(ssim(rec, test).mean().item(), 4))
            if kind == "vae":
                dims, offset = test[0].numel(), math.log(127.5)
                e = elbo(ae, test, generator=torch.Generator().manual_seed(0))
                w = iwae(ae, test, k=64, generator=torch.Generator().manual_seed(0))
                row.update(elbo_bpd=round((-e.mean().item() / dims + offset) / math.log(2), 4),
                           iwae64_bpd=round((-w.mean().item() / dims + offset) / math.log(2), 4))
        emit(row)
        _save_pairs(test[:16], rec[:16], DOCS / f"latent_ae_{name}.png", name)


def _save_pairs(x, rec, path, title):
    from sdeflow.plotting import save_samples
    save_samples(torch.cat([x, rec]), path, f"{title}: inputs (top), reconstructions (bottom)")


def score_config(latent: str | None, net: dict, **kw):
    from sdeflow.training.score import TrainConfig
    return TrainConfig(data=kw.pop("data", "color_digits"), data_kwargs=kw.pop("data_kwargs", DATA32),
                       model="unet", model_kwargs=dict(net), sde="edm", loss="edm",
                       precondition="edm", prediction="x0", sigma_data=0.5 if latent is None else 1.0,
                       latent=latent, steps=10**6, batch_size=64, lr=1e-3, warmup=100,
                       ema_decay=0.99, ckpt_every=10**6, tensorboard=False, **kw)


def timed(model, n, seed=0, cond=None, batch=250):
    xs, t0 = [], time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, batch):
            m = min(batch, n - i)
            c = None if cond is None else {k: v[i:i + m] for k, v in cond.items()}
            xs.append(sdeflow.sample(model, shape=(m, 3, 32, 32), solver="heun", steps=18,
                                     seed=seed + i, cond=c))
    return torch.cat(xs).clamp(-1, 1), (time.perf_counter() - t0) / n


def stage_compare(emit, a):
    get = sdeflow.data.get_data
    test, ref2 = get("color_digits", split="test", **DATA32).x, \
        get("color_digits", split="train", **DATA32).x[:360]
    ae_run = str(Path(a.runs) / "kl_color_digits")
    for name, latent, net in (("pixel", None, PIXEL_NET), ("latent", ae_run, LATENT_NET)):
        run = Path(a.runs) / f"compare_{name}"
        info = train_for(score_config(latent, net), run, a.minutes_model)
        model, _ = sdeflow.load(run, ema=not a.raw_weights)
        x, sec = timed(model, a.n)
        m = color_digits_metrics(x, test, ref2)
        emit(dict(stage="compare", name=name, **info, weights="raw" if a.raw_weights else "ema", seconds_per_image=round(sec, 5),
                  **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}))
        from sdeflow.plotting import save_samples
        save_samples(x[:64], DOCS / f"latent_compare_{name}.png", f"{name} diffusion, Heun 35 NFE")


def stage_text(emit, a):
    from sdeflow.data.captions import COLOURS, PALETTE, digit_caption, heldout_pairs, tokenize
    from sdeflow.guidance import ClassifierFreeGuidance
    ae_run = str(Path(a.runs) / "kl_color_digits")
    run = Path(a.runs) / "text_latent"
    cfg = score_config(ae_run, LATENT_NET, data="captioned_digits", data_kwargs=DATA32,
                       text_cond=True, p_uncond=0.1)
    info = train_for(cfg, run, a.minutes_text, a.extra_minutes_text)
    model, cfg = sdeflow.load(run, ema=not a.raw_weights)
    g = torch.Generator().manual_seed(0)
    pairs = heldout_pairs()
    n = a.n_text
    digit = torch.randint(0, 10, (n,), generator=g)
    pick = torch.randint(0, len(pairs), (n,), generator=g)
    fg = torch.tensor([COLOURS.index(pairs[i][0]) for i in pick])
    bg = torch.tensor([COLOURS.index(pairs[i][1]) for i in pick])
    texts = [digit_caption(int(d), COLOURS[f], COLOURS[b], g) for d, f, b in zip(digit, fg, bg)]
    tokens = tokenize(texts, cfg.model_kwargs["text_length"])
    palette = torch.tensor([PALETTE[c] for c in COLOURS])
    for w in (0.0, 1.0, 3.0):
        guided = ClassifierFreeGuidance(model, w, uncond={"tokens": 0})
        x, sec = timed(guided, n, cond={"tokens": tokens})
        m = color_digits_metrics(x, x, labels=digit, colours=(fg, bg), palette=palette)
        emit(dict(stage="text", w=w, **info, n=n, weights="raw" if a.raw_weights else "ema", captions="held-out colour pairs",
                  digit_accuracy=round(m["accuracy"], 4),
                  colour_accuracy=round(m["colour_accuracy"], 4),
                  seconds_per_image=round(sec, 5), example_captions=texts[:4]))
        from sdeflow.plotting import save_samples
        save_samples(x[:64], DOCS / f"latent_text_w{w:g}.png", f"held-out colour pairs, CFG w={w:g}")


def body(emit, a):
    stages = dict(ae=stage_ae, compare=stage_compare, text=stage_text)
    for s in a.stages.split(","):
        stages[s](emit, a)


def markdown(rows):
    out = []
    ae = [r for r in rows if r.get("stage") == "ae"]
    if ae:
        out += ["| autoencoder | steps | PSNR (dB) | SSIM | ELBO bits/dim | IWAE-64 bits/dim |",
                "|---|---:|---:|---:|---:|---:|"]
        out += [f"| {r['name']} | {r.get('steps', '–')} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                f"{r.get('elbo_bpd', '–')} | {r.get('iwae64_bpd', '–')} |" for r in ae]
    cmp_ = [r for r in rows if r.get("stage") == "compare"]
    if cmp_:
        out += ["", "| model | train steps | FDD | colour FD | s / image |", "|---|---:|---:|---:|---:|"]
        out += [f"| {r['name']} | {r.get('steps', '–')} | {r['fdd']:.2f} (floor "
                f"{r['fdd_floor']:.2f}) | {r['colour_fd']:.3f} (floor {r['colour_fd_floor']:.3f}) "
                f"| {r['seconds_per_image']:.4f} |" for r in cmp_]
    txt = [r for r in rows if r.get("stage") == "text"]
    if txt:
        out += ["", "| CFG w | digit accuracy | colour accuracy |", "|---:|---:|---:|"]
        out += [f"| {r['w']:g} | {r['digit_accuracy']:.3f} | {r['colour_accuracy']:.3f} |"
                for r in txt]
    return "\n".join(out)


def args(ap):
    ap.add_argument("--runs", default="/tmp/sdeflow_latent_runs")
    ap.add_argument("--stages", default="ae,compare,text")
    ap.add_argument("--minutes-ae", type=float, default=3.0)
    ap.add_argument("--minutes-model", type=float, default=10.0)
    ap.add_argument("--minutes-text", type=float, default=12.0)
    ap.add_argument("--extra-minutes-text", type=float, default=0.0,
                    help="train an existing text run this much longer (resumed exactly)")
    ap.add_argument("--n", type=int, default=500, help="samples per model (compare)")
    ap.add_argument("--n-text", type=int, default=500, help="samples per CFG scale (text)")
    ap.add_argument("--raw-weights", action="store_true",
                    help="sample the trained weights, not their EMA (runs shorter than the EMA's "
                         "time constant 1/(1 − decay) steps)")


if __name__ == "__main__":
    run_benchmark(__doc__, body, markdown, args)
