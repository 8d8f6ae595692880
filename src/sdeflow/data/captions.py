"""Captioned data for text conditioning, with no download: a fixed word vocabulary, a caption
grammar that varies word order, and two data sets.

* ``captioned_digits``: the embedded digits at ``resolution`` painted with a named foreground
  and background colour of :data:`PALETTE` (pixel = bg + a·(fg − bg), a the digit's ink, as
  :func:`~sdeflow.data.rgb.paint`), the two colours' grey levels (mean of R, G, B) at least
  ``min_contrast`` apart so the digit stays visible in grey. The (fg, bg) pairs of
  :data:`HELDOUT_PAIRS` (6 of the 58 allowed pairs, ≈ 10 %) never appear in ``split="train"``
  or ``"test"``; ``split="heldout"`` paints the test digits with them only — a check that a
  model composes colours it has seen, in a combination it has not.
* ``captioned_gmm``: a 2-D mixture of four Gaussians at the quadrants, named by two words
  ("north east", …), so a caption names a component only by both words, in either order.

Captions are drawn afresh at every draw from :data:`DIGIT_TEMPLATES` / :data:`GMM_TEMPLATES`,
with synonyms (digit words and numerals, "grey"/"gray", "violet"/"purple"). The roles of the
colours are marked by words — the background colour is followed by "background" or follows
"on", the foreground colour stands before the digit or follows "in" — never by position alone
(:func:`parse_caption` reads them back by those rules).

:func:`tokenize` maps captions to ids over :data:`VOCAB`, a module constant (id 0 = padding =
the empty prompt), so a checkpoint does not store its vocabulary.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch
from torch import Tensor

from ..oracle import GaussianMixture
from .images import ImageData, digits
from .rgb import paint

__all__ = ["PALETTE", "COLOURS", "HELDOUT_PAIRS", "VOCAB", "vocabulary", "tokenize", "detokenize",
           "allowed_pairs", "heldout_pairs", "digit_caption", "gmm_caption", "parse_caption",
           "CaptionedDigits", "captioned_digits", "CaptionedMixture", "captioned_gmm",
           "DIGIT_TEMPLATES", "GMM_TEMPLATES", "GMM_NAMES"]

#: colour name → RGB in [0, 1]; grey levels 0, 1/3, 1/2, 2/3, 1
PALETTE = {"black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0), "red": (1.0, 0.0, 0.0),
           "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0), "yellow": (1.0, 1.0, 0.0),
           "cyan": (0.0, 1.0, 1.0), "magenta": (1.0, 0.0, 1.0), "purple": (0.5, 0.0, 0.5),
           "gray": (0.5, 0.5, 0.5)}
COLOURS = tuple(PALETTE)
_COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"gray": ("gray", "grey"),
                                                "purple": ("purple", "violet")}
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: (fg, bg) pairs kept out of training: ≈ 10 % of the pairs allowed at min_contrast 0.3
HELDOUT_PAIRS = (("red", "yellow"), ("cyan", "blue"), ("white", "purple"),
                 ("green", "magenta"), ("black", "gray"), ("yellow", "black"))

#: {f}: foreground colour word, {b}: background colour word, {d}: digit word or numeral,
#: {a}/{an}: the article before the next word
DIGIT_TEMPLATES = ("{a} {f} {d} on {a} {b} background", "{a} {d} in {f} on {b}",
                   "{f} {d}, {b} background", "on {a} {b} background {a} {f} {d}",
                   "the digit {d}, {f} on {b}", "{b} background with {a} {f} {d}",
                   "the number {d} written in {f} on {b}")
GMM_NAMES = (("north", "east"), ("north", "west"), ("south", "west"), ("south", "east"))
#: {u}, {v}: the component's two words, in either order
GMM_TEMPLATES = ("the {u} {v} cluster", "cluster {u} {v}", "a point in the {u} {v}",
                 "{u} and {v}")

_WORDS = {"a", "an", "the", "on", "in", "background", "with", "digit", "number", "written",
          "cluster", "point", "and", "north", "south", "east", "west", *_DIGIT_WORDS,
          *(str(i) for i in range(10)), *(w for ws in _COLOUR_WORDS.values() for w in ws)}
#: the vocabulary: id 0 is padding (the empty prompt), then the words in sorted order
VOCAB = ("<pad>", *sorted(_WORDS))
_ID = {w: i for i, w in enumerate(VOCAB)}


def vocabulary() -> tuple[str, ...]:
    """The words :func:`tokenize` knows (index = token id; 0 is padding)."""
    return VOCAB


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


@functools.lru_cache(maxsize=1 << 16)  # the grammar has a few ten thousand captions
def _ids(text: str, length: int) -> tuple[int, ...]:
    words = _words(text)
    unknown = sorted({w for w in words if w not in _ID})
    if unknown:
        raise ValueError(f"unknown word{'s' * (len(unknown) > 1)} {unknown} in {text!r}; "
                         f"the known words are sdeflow.data.captions.vocabulary()")
    if len(words) > length:
        raise ValueError(f"{text!r} has {len(words)} words, more than the {length} tokens "
                         f"the model reads")
    return tuple(_ID[w] for w in words) + (0,) * (length - len(words))


def tokenize(texts, length: int) -> Tensor:
    """Token ids (B, length) int64 of ``texts`` (a string or a list of them): lower-cased,
    punctuation dropped, split on white space, padded with 0; "" is the empty prompt."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    return torch.tensor([_ids(t, length) for t in texts], dtype=torch.long).reshape(-1, length)


def detokenize(tokens: Tensor) -> list[str]:
    """The captions of token ids (B, L), padding dropped."""
    return [" ".join(VOCAB[int(i)] for i in row if int(i) != 0) for row in tokens]


def _fill(template: str, words: dict) -> str:
    """The template's slots filled in, each {a} becoming "a" or "an" for the word after it."""
    text = template.format(a="{a}", **words)
    parts = text.split(" ")
    for i, w in enumerate(parts):
        if w == "{a}":
            parts[i] = "an" if parts[i + 1][0] in "aeiou8" else "a"
    return " ".join(parts)


def _pick(options, u: float):
    return options[min(int(u * len(options)), len(options) - 1)]


def digit_caption(digit: int, fg: str, bg: str, g: torch.Generator | None = None,
                  u=None) -> str:
    """A caption of a ``fg`` ``digit`` on ``bg``: template and synonyms chosen by four
    uniform numbers ``u`` (drawn from ``g`` if not given)."""
    u = torch.rand(4, generator=g).tolist() if u is None else u
    d = _pick((_DIGIT_WORDS[digit], str(digit)), u[1])
    words = dict(f=_pick(_COLOUR_WORDS[fg], u[2]), b=_pick(_COLOUR_WORDS[bg], u[3]), d=d)
    return _fill(_pick(DIGIT_TEMPLATES, u[0]), words)


def gmm_caption(k: int, g: torch.Generator | None = None, u=None) -> str:
    """A caption of component ``k`` of ``captioned_gmm``: template and word order chosen by
    two uniform numbers ``u`` (drawn from ``g`` if not given)."""
    u = torch.rand(2, generator=g).tolist() if u is None else u
    first, second = GMM_NAMES[k] if u[1] < 0.5 else GMM_NAMES[k][::-1]
    return _pick(GMM_TEMPLATES, u[0]).format(u=first, v=second)


def parse_caption(text: str) -> dict:
    """What a caption names, read by the grammar's role words: ``digit``, ``fg`` and ``bg``
    (colour names of :data:`PALETTE`) for a digit caption; ``component`` for a mixture one."""
    words, out = _words(text), {}
    canon = {w: c for c, ws in _COLOUR_WORDS.items() for w in ws}
    for i, w in enumerate(words):
        if w in _DIGIT_WORDS or w.isdigit():
            out["digit"] = int(w) if w.isdigit() else _DIGIT_WORDS.index(w)
        elif w in canon:
            after = words[i + 1] if i + 1 < len(words) else ""
            before = [x for x in words[max(0, i - 2):i] if x not in ("a", "an")]
            background = after == "background" or (before and before[-1] == "on")
            out["bg" if background else "fg"] = canon[w]
    names = {frozenset(n): k for k, n in enumerate(GMM_NAMES)}
    found = frozenset(w for w in words if w in ("north", "south", "east", "west"))
    if found in names:
        out["component"] = names[found]
    return out


def allowed_pairs(min_contrast: float = 0.3) -> list[tuple[str, str]]:
    """Every (fg, bg) of distinct colours whose grey levels differ by ≥ min_contrast."""
    grey = {c: sum(v) / 3 for c, v in PALETTE.items()}
    return [(f, b) for f in COLOURS for b in COLOURS
            if f != b and abs(grey[f] - grey[b]) >= min_contrast - 1e-9]


def heldout_pairs() -> tuple[tuple[str, str], ...]:
    """The (fg, bg) pairs only ``split="heldout"`` uses (:data:`HELDOUT_PAIRS`)."""
    return HELDOUT_PAIRS


@dataclass
class CaptionedDigits(ImageData):
    """Painted digits with their attributes: ``fg``, ``bg`` (N,) indices into :data:`COLOURS`
    (``y`` is the digit); :meth:`draw_captioned` adds a fresh caption per image."""

    fg: Tensor | None = None
    bg: Tensor | None = None
    text_length: int = 16
    vocab_size: int = len(VOCAB)

    def caption(self, i: int, g: torch.Generator | None = None, u=None) -> str:
        """A freshly drawn caption of image ``i``."""
        return digit_caption(int(self.y[i]), COLOURS[int(self.fg[i])], COLOURS[int(self.bg[i])],
                             g, u)

    def tokens_for(self, idx: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Tokens (len(idx), text_length) of one freshly drawn caption of each image idx."""
        u = torch.rand(len(idx), 4, generator=generator).tolist()
        attrs = zip(self.y[idx].tolist(), self.fg[idx].tolist(), self.bg[idx].tolist(), u)
        texts = [digit_caption(d, COLOURS[f], COLOURS[b], u=ui) for d, f, b, ui in attrs]
        return tokenize(texts, self.text_length)

    def draw_captioned(self, n: int, generator: torch.Generator | None = None):
        """(x, y, tokens): n images drawn with replacement, tokens (n, text_length) of one
        freshly drawn caption each."""
        idx = torch.randint(len(self.x), (n,), generator=generator)
        return self.x[idx], self.y[idx], self.tokens_for(idx, generator)


def captioned_digits(split: str = "train", resolution: int = 32, seed: int = 0,
                     copies: int = 1, min_contrast: float = 0.3) -> CaptionedDigits:
    """The digits of ``split`` ("train", "test" or "heldout": the test digits in the held-out
    colour pairs) painted ``copies`` times each in (fg, bg) pairs drawn uniformly from the
    allowed pairs of the split (see the module docstring)."""
    if split not in ("train", "test", "heldout"):
        raise ValueError(f"unknown split {split!r}; choices: ['heldout', 'test', 'train']")
    if copies < 1 or not 0 <= min_contrast < 1:
        raise ValueError("copies must be ≥ 1 and min_contrast in [0, 1)")
    pairs = [p for p in allowed_pairs(min_contrast) if (p in HELDOUT_PAIRS) == (split == "heldout")]
    if not pairs:
        raise ValueError(f"no colour pair of split {split!r} has grey levels min_contrast="
                         f"{min_contrast} apart: lower min_contrast")
    base = digits("train" if split == "train" else "test", resolution)
    g = torch.Generator().manual_seed(seed * 3 + {"train": 0, "test": 1, "heldout": 2}[split])
    ink = ((base.x + 1) / 2).repeat(copies, 1, 1, 1)
    which = torch.randint(len(pairs), (len(ink),), generator=g)
    fg = torch.tensor([COLOURS.index(pairs[i][0]) for i in which])
    bg = torch.tensor([COLOURS.index(pairs[i][1]) for i in which])
    rgb = torch.tensor(list(PALETTE.values()), dtype=torch.float32)
    x = paint(ink, rgb[fg], rgb[bg]).clamp(-1, 1)
    return CaptionedDigits(x, base.y.repeat(copies), base.num_classes, base.class_names,
                           fg=fg, bg=bg)


class CaptionedMixture:
    """Four isotropic Gaussians (std ``std``) at (±``radius``, ±``radius``), the quadrants,
    named by :data:`GMM_NAMES` (north = +y, east = +x); labels y = component, captions from
    :func:`gmm_caption`. ``mixture`` is the exact :class:`~sdeflow.oracle.GaussianMixture`."""

    num_classes = len(GMM_NAMES)
    shape = (2,)
    text_length = 8
    vocab_size = len(VOCAB)

    def __init__(self, radius: float = 2.0, std: float = 0.3):
        if not (radius > 0 and std > 0):
            raise ValueError(f"captioned_gmm: radius and std must be positive, got {radius}, {std}")
        sign = {"north": 1.0, "south": -1.0, "east": 1.0, "west": -1.0}
        self.means = radius * torch.tensor([[sign[h], sign[v]] for v, h in GMM_NAMES],
                                           dtype=torch.float64)
        self.mixture = GaussianMixture(torch.ones(len(GMM_NAMES)), self.means, stds=std)
        self.std = std

    def draw(self, n: int, generator: torch.Generator | None = None):
        """(x (n, 2) float32, component labels (n,))."""
        k = torch.randint(len(self.means), (n,), generator=generator)
        eps = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.std * eps).to(torch.float32), k

    def draw_captioned(self, n: int, generator: torch.Generator | None = None):
        """(x, y, tokens (n, text_length)) with one freshly drawn caption per point."""
        x, k = self.draw(n, generator)
        u = torch.rand(n, 2, generator=generator).tolist()
        texts = [gmm_caption(i, u=ui) for i, ui in zip(k.tolist(), u)]
        return x, k, tokenize(texts, self.text_length)

    def component(self, x: Tensor) -> Tensor:
        """The nearest mean's index of each point (the quadrant)."""
        return torch.cdist(x.to(self.means), self.means).argmin(1)


def captioned_gmm(radius: float = 2.0, std: float = 0.3) -> CaptionedMixture:
    return CaptionedMixture(radius, std)
