"""Captioned data: the tokenizer is exact over its fixed vocabulary, every caption the grammar
draws names its image's digit and colours (read back by role words), word order really varies,
and the held-out colour pairs never reach the training split."""
import pytest
import torch

from sdeflow.data import get_data, list_data, list_vector_data
from sdeflow.data.captions import (COLOURS, DIGIT_TEMPLATES, GMM_NAMES, HELDOUT_PAIRS, PALETTE,
                                   VOCAB, allowed_pairs, detokenize, digit_caption, gmm_caption,
                                   heldout_pairs, parse_caption, tokenize, vocabulary)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_vocabulary_round_trips_and_pads():
    words = list(vocabulary()[1:])
    tokens = tokenize([" ".join(words)], len(words) + 3)
    assert tokens[0, :len(words)].tolist() == list(range(1, len(VOCAB)))
    assert tokens[0, len(words):].tolist() == [0, 0, 0]  # padding
    assert detokenize(tokens) == [" ".join(words)]
    assert tokenize([""], 5).tolist() == [[0] * 5]  # the empty prompt
    # case and punctuation do not matter
    assert torch.equal(tokenize(["Red 7, BLUE background!"], 6), tokenize(["red 7 blue background"], 6))


def test_unknown_words_and_long_captions_are_refused():
    with pytest.raises(ValueError, match=r"unknown words \['pink', 'zebra'\].*vocabulary\(\)"):
        tokenize(["a pink zebra on blue"], 8)
    with pytest.raises(ValueError, match="more than the 3 tokens"):
        tokenize(["a red seven on blue"], 3)


def test_every_digit_caption_names_its_digit_and_colours():
    """200 captions per (digit, pair) sample of the grammar parse back to what they describe."""
    g = gen(0)
    pairs = allowed_pairs()
    for i in range(400):
        digit, (fg, bg) = i % 10, pairs[i % len(pairs)]
        text = digit_caption(digit, fg, bg, g)
        assert parse_caption(text) == dict(digit=digit, fg=fg, bg=bg), text
        tokenize([text], 16)  # every drawn word is in the vocabulary


def test_word_order_varies_between_captions():
    """The foreground and background colour words take several positions (the roles are read
    from words, not from where a word stands), and the background may come first."""
    g, fg_at, bg_first = gen(1), set(), 0
    red, blue = VOCAB.index("red"), VOCAB.index("blue")
    for _ in range(200):
        row = tokenize([digit_caption(7, "red", "blue", g)], 16)[0].tolist()
        fg_at.add(row.index(red))
        bg_first += row.index(blue) < row.index(red)
    assert len(fg_at) >= 4 and bg_first > 20, (fg_at, bg_first)
    assert len(DIGIT_TEMPLATES) >= 5


def test_synonyms_are_drawn():
    g = gen(2)
    words = {w for _ in range(300) for w in digit_caption(8, "gray", "purple", g).split()}
    assert {"grey", "gray", "violet", "purple", "8", "eight", "an"} <= words


def test_heldout_pairs_never_appear_in_training():
    assert heldout_pairs() == HELDOUT_PAIRS
    assert set(HELDOUT_PAIRS) <= set(allowed_pairs())
    assert 0.08 <= len(HELDOUT_PAIRS) / len(allowed_pairs()) <= 0.12
    train = get_data("captioned_digits", resolution=8, copies=3)
    seen = {(COLOURS[f], COLOURS[b]) for f, b in zip(train.fg.tolist(), train.bg.tolist())}
    assert not seen & set(HELDOUT_PAIRS)
    assert len(seen) == len(allowed_pairs()) - len(HELDOUT_PAIRS)  # all the others are used
    held = get_data("captioned_digits", split="heldout", resolution=8)
    assert {(COLOURS[f], COLOURS[b]) for f, b in zip(held.fg.tolist(), held.bg.tolist())} == \
        set(HELDOUT_PAIRS)


def test_captioned_digits_draw_and_paint():
    data = get_data("captioned_digits")
    assert "captioned_digits" in list_data() and data.shape == (3, 32, 32)
    x, y, tokens = data.draw_captioned(16, gen(3))
    assert x.shape == (16, 3, 32, 32) and tokens.shape == (16, data.text_length)
    assert x.min() >= -1 and x.max() <= 1 and tokens.max() < data.vocab_size
    x2, y2 = data.draw(4, gen(3))
    assert x2.shape == (4, 3, 32, 32) and y2.shape == (4,)
    # the corner pixel (no ink) is the background colour of the palette
    rgb = torch.tensor(list(PALETTE.values()))
    assert torch.allclose((data.x[:50, :, 0, 0] + 1) / 2, rgb[data.bg[:50]], atol=1e-5)


def test_captioned_mixture():
    data = get_data("captioned_gmm")
    assert "captioned_gmm" in list_vector_data()
    assert data.mixture.n_components == len(GMM_NAMES) == len(data.means)
    x, y, tokens = data.draw_captioned(2000, gen(4))
    assert (data.component(x) == y).float().mean() > 0.99  # well-separated quadrants
    for k, row in zip(y[:50].tolist(), detokenize(tokens[:50])):
        assert parse_caption(row)["component"] == k
    orders = {gmm_caption(0, gen(s)).split().index("north") for s in range(40)}
    assert len(orders) >= 3
