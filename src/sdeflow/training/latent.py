"""Latent diffusion as an option of score matching (``sdeflow train --latent AE_RUN``): the
run's data are the autoencoder's rescaled latents (:class:`~sdeflow.latent.LatentData`), the
autoencoder is saved with every checkpoint (a non-trained network, like a distillation
teacher), and the exported model is a :class:`~sdeflow.latent.LatentDenoiser` whose samples
are decoded images.

The autoencoder run's config is copied into ``latent_config`` when the run starts and its
weights into the first checkpoint, so the latent model loads without the autoencoder's run
directory; training (and resuming) re-reads the encoded latents, cached next to that run and
keyed by the digest of the autoencoder's weights (a retrained autoencoder is never confused
with the one a run started with).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

__all__ = ["LatentFields", "build_autoencoder_of", "as_latent_model", "weights_digest"]


@dataclass
class LatentFields:
    """Config fields of a program trained on an autoencoder's latents (mixed into its config)."""

    latent: str | None = None  # the autoencoder's run (None: pixel space); its checkpoint folder
    latent_config: dict | None = None  # that checkpoint's config, copied when the run starts
    latent_digest: str | None = None  # SHA-256 of that checkpoint's weights
    latent_scale: float | None = None  # c = 1/std of the training latents, set at the start

    def complete_latent(self) -> None:
        """Pin the autoencoder: ``latent`` becomes its run's latest checkpoint folder, whose
        config and weight digest are recorded (once), so a resumed run, the cached codes and
        the saved autoencoder all refer to the same weights."""
        if self.latent and self.latent_config is None:
            from ..checkpoint import read_config, resolve_checkpoint
            ck = resolve_checkpoint(self.latent)
            self.latent = str(Path(ck).resolve())
            self.latent_config = read_config(ck)
            self.latent_digest = weights_digest(ck)

    def latent_checks(self) -> list[tuple[bool, str]]:
        if not self.latent and self.latent_config is None:
            return [(self.latent_scale is None, "latent_scale is set but latent is not")]
        lc = self.latent_config or {}
        return [(lc.get("kind") == "autoencoder",
                 f"latent={self.latent!r} is not the run of an autoencoder (its checkpoint holds "
                 f"a {lc.get('kind', 'score')!r} model); train one with `sdeflow "
                 f"train-autoencoder`"),
                (self.latent_scale is None or self.latent_scale > 0,
                 "latent_scale must be positive"),
                (not getattr(self, "hflip", False), "hflip flips images, not latents: drop it "
                                                    "with latent"),
                (getattr(self, "task", None) is None, "image-to-image tasks need pixel space: "
                                                      "drop task or latent"),
                (not getattr(self, "learn_sigma", False),
                 "learn_sigma's bound has a pixel decoder: drop it with latent")]

    def load_latent_data(self, source):
        """``source`` encoded by the autoencoder run (codes cached in ``<run>/latent-cache``)."""
        from ..checkpoint import resolve_checkpoint
        from ..latent import LatentData
        from ..loading import load
        if not Path(self.latent).exists():
            raise ValueError(f"latent: the autoencoder checkpoint {self.latent} does not exist "
                             f"(a latent run re-reads its data's codes from it)")
        ck = resolve_checkpoint(self.latent)
        digest = weights_digest(ck)
        if self.latent_digest is not None and digest != self.latent_digest:
            raise ValueError(f"latent: the autoencoder checkpoint {ck} has other weights than "
                             f"when this run started (retrained in place?); start a new run")
        want = list(self.latent_config.get("shape") or [])
        if want != list(source.shape):
            raise ValueError(f"latent: the autoencoder {self.latent} takes images of shape {want}, "
                             f"the data {self.data!r} {self.data_kwargs} has {list(source.shape)}")
        ae, _ = load(ck, kind="autoencoder")
        key = dict(digest=digest, data=self.data, kwargs=self.data_kwargs)
        return LatentData(source, ae, scale=self.latent_scale,
                          cache_dir=Path(ck).resolve().parent / "latent-cache", cache_key=key)


def weights_digest(ck) -> str:
    """SHA-256 (16 hex digits) of the ``*.safetensors`` files of a checkpoint folder."""
    import hashlib
    h = hashlib.sha256()
    for f in sorted(Path(ck).glob("*.safetensors")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def build_autoencoder_of(cfg) -> nn.Module:
    """The autoencoder network described by ``cfg.latent_config`` (weights: a checkpoint's)."""
    from .autoencoder import build_from_config
    return build_from_config(cfg.latent_config)


def as_latent_model(model, autoencoder: nn.Module, cfg):
    """The exported :class:`~sdeflow.latent.LatentDenoiser` of a latent run."""
    from ..latent import LatentDenoiser
    return LatentDenoiser(model, autoencoder, cfg.latent_scale, cfg.latent_config["shape"])
