"""The caption options as sd-scripts has them: the caption each step trains (loratui/captions.py),
the 150/225-token chunks the CLIP text encoders read (engine/data.py), the engine training the
varied captions, and the check's lines for the combinations that cannot work."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from loratui import cli
from loratui.captions import cacheable, cached_captions, process_caption, step_caption
from loratui.subset_options import SubsetOptions

from .conftest import small_config, train_in_process, write_config

CAPTION = "ohwx woman, red hair, smiling, outdoors, looking at viewer, denim jacket"
TAGS = [tag.strip() for tag in CAPTION.split(",")]


def draws(options: SubsetOptions, count: int = 400, epoch: int = 1, seed: int = 7, caption: str = CAPTION) -> list[str]:
    """The captions of ``count`` steps (one image at each batch position 0 of batches 0..count-1)."""
    return [step_caption(caption, options, seed, epoch, batch, 0) for batch in range(count)]


def tags_of(caption: str) -> list[str]:
    return [tag.strip() for tag in caption.split(",")] if caption else []


# ---------------------------------------------------------------------------------------------
# The caption of a step


def test_shuffled_captions_keep_the_first_n_tags_in_place():
    for keep in (1, 2):
        seen = draws(SubsetOptions(shuffle_caption=True, keep_tokens=keep))
        for caption in seen:
            assert tags_of(caption)[:keep] == TAGS[:keep], caption
            assert sorted(tags_of(caption)) == sorted(TAGS), caption  # a shuffle: nothing lost, nothing added
        # the other tags do move: each of them is seen at each of the places after the kept ones
        places = {tag: {tags_of(c).index(tag) for c in seen} for tag in TAGS[keep:]}
        assert all(spots == set(range(keep, len(TAGS))) for spots in places.values()), places


def test_without_keep_tokens_every_tag_moves():
    seen = draws(SubsetOptions(shuffle_caption=True))
    assert {tags_of(c)[0] for c in seen} == set(TAGS)


def test_the_separator_keeps_the_tags_before_it_and_after_a_second_one():
    caption = "ohwx, woman ||| red hair, smiling, outdoors ||| masterpiece, best quality"
    options = SubsetOptions(shuffle_caption=True, keep_tokens=5, keep_tokens_separator="|||")
    seen = draws(options, caption=caption)
    for text in seen:
        tags = tags_of(text)
        # keep_tokens does not count where the separator is; the separator itself is not trained
        assert tags[:2] == ["ohwx", "woman"] and tags[-2:] == ["masterpiece", "best quality"], text
        assert sorted(tags[2:-2]) == ["outdoors", "red hair", "smiling"] and "|||" not in text
    assert len({tuple(tags_of(t)[2:-2]) for t in seen}) == 6  # every order of the three middle tags


def test_a_caption_without_the_separator_falls_back_to_keep_tokens():
    options = SubsetOptions(shuffle_caption=True, keep_tokens=1, keep_tokens_separator="|||")
    assert all(tags_of(c)[0] == TAGS[0] for c in draws(options))


def test_prefix_and_suffix_are_joined_with_a_space_before_the_tags_are_split():
    options = SubsetOptions(caption_prefix="sks", caption_suffix="photo")
    assert draws(options, count=1) == [f"sks {CAPTION} photo"]
    # with a shuffle, the prefix is part of the first tag and the suffix of the last, as in sd-scripts
    shuffled = draws(SubsetOptions(caption_prefix="sks", caption_suffix="photo", shuffle_caption=True, keep_tokens=1))
    assert all(c.startswith("sks ohwx woman, ") for c in shuffled)
    assert {t for c in shuffled for t in tags_of(c)} == {"sks ohwx woman", *TAGS[1:-1], "denim jacket photo"}


def test_caption_dropout_drops_whole_captions_at_the_rate():
    seen = draws(SubsetOptions(caption_dropout_rate=0.2), count=4000)
    dropped = seen.count("")
    assert abs(dropped / 4000 - 0.2) < 0.03, dropped  # 0.03 is about 4.7 standard deviations
    assert set(seen) == {"", CAPTION}


def test_caption_dropout_every_n_epochs_drops_every_caption_of_those_epochs():
    options = SubsetOptions(caption_dropout_every_n_epochs=3)
    for epoch in range(1, 10):
        seen = draws(options, count=20, epoch=epoch)
        assert seen == [""] * 20 if epoch % 3 == 0 else seen == [CAPTION] * 20, epoch


def test_tag_dropout_drops_each_free_tag_at_the_rate_and_never_a_kept_one():
    options = SubsetOptions(caption_tag_dropout_rate=0.3, keep_tokens=1)
    seen = draws(options, count=2000)
    assert all(tags_of(c)[0] == TAGS[0] for c in seen)
    present = Counter(tag for c in seen for tag in tags_of(c)[1:])
    for tag in TAGS[1:]:
        assert abs(1 - present[tag] / 2000 - 0.3) < 0.04, (tag, present[tag])
    # without a shuffle the order of the tags that stay is the caption's
    assert all(tags_of(c) == [t for t in TAGS if t in tags_of(c)] for c in seen)


def test_the_order_of_operations_is_sd_scripts():
    """Prefix, then the caption dropout (drawn first), then the shuffle, then the tag dropout."""
    import random

    options = SubsetOptions(caption_prefix="p", shuffle_caption=True, caption_tag_dropout_rate=0.5, keep_tokens=1)
    rng, mirror = random.Random(3), random.Random(3)
    text = process_caption("a, b, c, d", options, 1, rng)
    rest = ["b", "c", "d"]
    mirror.shuffle(rest)
    assert text == ", ".join(["p a", *[t for t in rest if mirror.random() >= 0.5]])


def test_the_same_seed_draws_the_same_captions_and_another_seed_others():
    options = SubsetOptions(shuffle_caption=True, caption_dropout_rate=0.1, caption_tag_dropout_rate=0.1)
    assert draws(options, seed=7) == draws(options, seed=7)
    assert draws(options, seed=7) != draws(options, seed=8)


def test_a_resumed_run_draws_what_an_uninterrupted_one_draws():
    """Each draw depends on (seed, epoch, batch, position) alone, not on the draws before it."""
    options = SubsetOptions(shuffle_caption=True, caption_tag_dropout_rate=0.2)
    steps = list(itertools.product(range(1, 4), range(10), range(4)))  # epoch, batch, position
    uninterrupted = {step: step_caption(CAPTION, options, 7, *step) for step in steps}
    resumed = {step: step_caption(CAPTION, options, 7, *step) for step in steps[57:]}  # from the middle
    assert all(resumed[step] == uninterrupted[step] for step in resumed)
    # and positions of one batch draw differently (not the same shuffle for the whole batch)
    assert len({uninterrupted[(1, 0, position)] for position in range(4)}) > 1


def test_which_captions_a_cache_can_hold():
    assert cacheable(SubsetOptions(caption_dropout_rate=0.1, caption_dropout_every_n_epochs=2, keep_tokens=1))
    assert not cacheable(SubsetOptions(shuffle_caption=True))
    assert not cacheable(SubsetOptions(caption_tag_dropout_rate=0.1))
    assert cached_captions("a, b", SubsetOptions(caption_prefix="x")) == ["x a, b"]
    assert cached_captions("a, b", SubsetOptions(caption_dropout_rate=0.1)) == ["a, b", ""]


# ---------------------------------------------------------------------------------------------
# 150 and 225 tokens: chunks of 75, as sd-scripts makes them


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import CLIPTokenizer

    from engine.tiny_sdxl import ensure_tiny_sdxl

    folder = ensure_tiny_sdxl()
    return CLIPTokenizer.from_pretrained(folder / "tokenizer"), CLIPTokenizer.from_pretrained(folder / "tokenizer_2")


def test_a_long_caption_is_read_in_chunks_each_with_its_start_and_end(tokenizers):
    from engine.data import tokenize

    tokenizer, _ = tokenizers
    long_caption = " ".join(f"w{i}" for i in range(200))
    whole = tokenizer(long_caption, truncation=False).input_ids[1:-1]  # the caption's tokens
    assert len(whole) > 225
    start, end = tokenizer.bos_token_id, tokenizer.eos_token_id
    for length, chunks in ((75, 1), (150, 2), (225, 3)):
        ids = tokenize(tokenizer, [long_caption, "short"], length)
        assert tuple(ids.shape) == (2 * chunks, 77)
        for index in range(chunks):  # the long caption's chunks, in a row, then the short one's
            assert ids[index].tolist() == [start, *whole[75 * index : 75 * (index + 1)], end]
        short, own = ids[chunks:], tokenizer("short").input_ids  # its start, tokens and end
        assert short[0, : len(own)].tolist() == own
        assert all(row[0] == start and row[-1] == end for row in short)


def test_a_tokenizer_padding_with_another_token_gets_sd_scripts_end_tokens(tokenizers):
    """SDXL's second tokenizer pads with "!": a chunk past the caption's end starts with an end
    token; a chunk the caption fills ends with one."""
    from engine.data import tokenize

    _, tokenizer_2 = tokenizers
    start, end, pad = tokenizer_2.bos_token_id, tokenizer_2.eos_token_id, tokenizer_2.pad_token_id
    assert pad != end
    short = tokenize(tokenizer_2, ["red hair"], 225)
    assert short.shape[0] == 3
    assert short[1, :3].tolist() == [start, end, pad] and short[2, :3].tolist() == [start, end, pad]
    filled = tokenize(tokenizer_2, [" ".join(f"w{i}" for i in range(60))], 150)  # more than 75 tokens
    assert filled[0, -1] == end and filled[0, -2] not in (end, pad)


def test_the_chunks_hidden_states_are_joined_as_sd_scripts_joins_them():
    import torch

    from engine.data import join_chunks

    states = torch.arange(2 * 3 * 77, dtype=torch.float32).reshape(6, 77, 1)  # 2 captions x 3 chunks
    joined = join_chunks(states, 2)
    assert tuple(joined.shape) == (2, 227, 1)
    flat = states.reshape(2, 3 * 77)
    for row in range(2):
        expected = [flat[row, 0]] + [flat[row, 77 * c + i] for c in range(3) for i in range(1, 76)] + [flat[row, -1]]
        assert joined[row, :, 0].tolist() == [float(v) for v in expected]
    assert torch.equal(join_chunks(states[:2], 2), states[:2])  # one chunk: as it is


# ---------------------------------------------------------------------------------------------
# The engine trains them


def test_a_frozen_encoder_encodes_changing_captions_at_every_step_and_never_caches_them():
    import torch

    from engine.text_cache import TextEncoding

    encoded: list[list[str]] = []

    def encode(texts):
        encoded.append(list(texts))
        return {"rows": torch.zeros(len(texts), 2, requires_grad=True) * 2}  # as if from a graph

    changing = TextEncoding("off", None, captions_repeat=False)
    changing.add("te", encode, trained=False, identity="")
    for _ in range(2):
        rows = changing.rows(["a, b", "b, a"], torch.device("cpu"))
    assert encoded == [["a, b", "b, a"]] * 2 and not changing.caches  # nothing kept for a caption never seen again
    assert not rows["rows"].requires_grad  # a frozen encoder keeps no graph
    repeating = TextEncoding("off", None)
    repeating.add("te", encode, trained=False, identity="")
    for _ in range(2):
        repeating.rows(["a, b"], torch.device("cpu"))
    assert encoded[2:] == [["a, b"]]  # the rows of a caption that repeats are kept
    with pytest.raises(ValueError):  # the check refuses it first; the engine never caches them either
        TextEncoding("memory", None, captions_repeat=False)


LONG_PROMPT = "ohwx shape, " + ", ".join(f"tag{i}" for i in range(40)) + " --w 64 --h 64 --s 2"


def sample_prompt(negative: str = ""):
    from loratui.sample_prompts import SamplePrompt

    return SamplePrompt(0, "ohwx shape, a long prompt", negative, 64, 64, 1, 2, 7.0, None, "euler_a")


def _record_captions(monkeypatch) -> list[tuple[list[str], dict]]:
    """Every call of the text encoders: the captions, and the shapes of the rows they gave."""
    from engine.text_cache import TextEncoding

    calls: list[tuple[list[str], dict]] = []
    original = TextEncoding.rows

    def rows(self, texts, device):
        result = original(self, texts, device)
        calls.append((list(texts), {name: tuple(value.shape) for name, value in result.items()}))
        return result

    monkeypatch.setattr(TextEncoding, "rows", rows)
    return calls


@pytest.mark.slow
def test_sdxl_reads_225_tokens_in_three_chunks_and_pools_the_first(project, monkeypatch):
    calls = _record_captions(monkeypatch)
    # a caption dropout with the outputs cached: the empty caption is cached with the others
    dataset = {"max_token_length": 225, "bucket_reso_steps": 32, "caption_dropout_rate": 0.5}
    data = small_config(
        model={"path": "loratui:tiny-sdxl", "family": "sdxl"},
        dataset={**dataset, "cache_text_encoder_outputs": "memory"},
        network={"train_unet_only": True},
        training={"max_train_steps": 3, "batch_size": 2},
    )
    data["sample"] = {"prompts": [LONG_PROMPT + " --n blurry"], "at_start": True}
    recorder, trainer = train_in_process(write_config(project, data))
    assert recorder.events[-1]["type"] == "finished"
    assert len(recorder.of("sample")) == 1
    arguments = trainer.family.sample_arguments(sample_prompt(negative="blurry"))
    assert arguments["prompt_embeds"].shape[:2] == arguments["negative_prompt_embeds"].shape[:2] == (1, 227)
    assert arguments["pooled_prompt_embeds"].shape[0] == 1
    steps = [(texts, s) for texts, s in calls if len(texts) == 2]
    assert all(s["hidden_states_1"][:2] == (2, 227) and s["hidden_states_2"][:2] == (2, 227) for _, s in steps)
    assert all(s["text_embeds"][0] == 2 for _, s in steps)  # one pooled vector per caption
    trained = [text for texts, _ in steps for text in texts]
    assert "" in trained and any(trained), trained  # about half the captions dropped
    for cache in trainer.text.caches.values():  # every caption trained was encoded before the first step
        assert set(trained) <= set(cache._rows) and "" in cache._rows


@pytest.mark.slow
def test_the_engine_trains_shuffled_captions_in_150_tokens_and_a_resumed_run_the_same_ones(project, monkeypatch):
    calls = _record_captions(monkeypatch)
    dataset = {"shuffle_caption": True, "keep_tokens": 1, "caption_prefix": "sks", "max_token_length": 150}
    data = small_config(dataset=dataset, training={"max_train_steps": 4, "batch_size": 2})
    data["sample"] = {"prompts": [LONG_PROMPT], "at_start": True}
    recorder, trainer = train_in_process(write_config(project, data))
    assert recorder.events[-1]["type"] == "finished"
    # the samples' prompts are read as the captions are: 150 tokens
    assert len(recorder.of("sample")) == 1
    arguments = trainer.family.sample_arguments(sample_prompt())
    assert arguments["prompt_embeds"].shape[:2] == arguments["negative_prompt_embeds"].shape[:2] == (1, 152)
    uninterrupted = [texts for texts, _ in calls if len(texts) == 2]  # the steps' batches (the eval reads one image)
    assert len(uninterrupted) == 4
    texts = [text for batch in uninterrupted for text in batch]
    assert all(text.startswith("sks ohwx shape, ") for text in texts), texts
    images = {tuple(sorted(tags_of(text))) for text in texts}
    assert len(set(texts)) > len(images)  # some image was trained with its tags in two orders
    eval_texts = {texts[0] for texts, _ in calls if len(texts) == 1}  # the eval loss: prefix, no shuffle
    assert all(text.startswith("sks ohwx shape, ") for text in eval_texts)
    assert {shapes["encoder_hidden_states"][:2] for _, shapes in calls} == {(2, 152), (1, 152)}  # 1 + 2 x 75 + 1

    calls.clear()
    del data["sample"]
    data["output"]["output_dir"] = "model2"
    config = write_config(project, data)

    def stop_after_two(event, stop):
        if event["type"] == "step" and event["step"] == 2:
            stop.request("test")

    first, _ = train_in_process(config, on_event=stop_after_two)
    train_in_process(config, resume=first.of("stopped")[0]["state"], overwrite=True)
    assert [texts for texts, _ in calls if len(texts) == 2] == uninterrupted


# ---------------------------------------------------------------------------------------------
# The check


def check_lines(project, capsys, **sections) -> tuple[int, list[str]]:
    code = cli.main(["check", str(write_config(project, small_config(**sections)))])
    out = capsys.readouterr().out
    return code, [line.strip() for line in out.splitlines() if line.strip().startswith(("error", "warning", "note"))]


def only(lines: list[str], where: str) -> str:
    """The one error or warning line of ``where`` (a dataset error adds a note that the images were not scanned)."""
    found = [line for line in lines if f" {where}: " in line and not line.startswith("note")]
    assert len(found) == 1, lines
    return found[0]


def test_a_dropout_of_every_caption_is_refused(project, capsys):
    code, lines = check_lines(project, capsys, dataset={"caption_dropout_rate": 1.0})
    line = only(lines, "dataset.caption_dropout_rate")
    assert code == 1 and line.startswith("error") and "empty caption at every step" in line and "0.05" in line


def test_a_text_cache_of_shuffled_captions_is_refused_naming_both_settings(project, capsys):
    frozen = {"train_unet_only": True}
    for dataset, says, fix in (
        ({"shuffle_caption": True}, "shuffle_caption is on", "or shuffle_caption = false"),
        ({"caption_tag_dropout_rate": 0.1}, "caption_tag_dropout_rate is 0.1", "or caption_tag_dropout_rate = 0"),
    ):
        code, lines = check_lines(
            project, capsys, dataset={"cache_text_encoder_outputs": "memory", **dataset}, network=frozen
        )
        line = only(lines, "dataset.cache_text_encoder_outputs")
        assert code == 1 and line.startswith("error") and 'cache_text_encoder_outputs "memory"' in line and says in line
        assert '(fix: set cache_text_encoder_outputs = "off"' in line and line.endswith(f"{fix})"), line
    # a caption dropout only adds the empty caption: cached too
    code, lines = check_lines(
        project, capsys, dataset={"cache_text_encoder_outputs": "memory", "caption_dropout_rate": 0.1}, network=frozen
    )
    assert code == 0 and not [line for line in lines if line.startswith("error")], lines


def test_a_subsets_own_caption_options_are_judged_by_the_check(project, capsys):
    """A [[subsets]] table with its own shuffle under a text cache, or its own dropout of 1: one line
    each, naming the subset; the [dataset] section's options are fine."""
    data = small_config(
        dataset={"image_dir": "", "cache_text_encoder_outputs": "memory"}, network={"train_unet_only": True}
    )
    data["subsets"] = [
        {"image_dir": "img/10_ohwx shape", "shuffle_caption": True},
        {"image_dir": "img/10_ohwx shape", "caption_dropout_rate": 1.0, "is_reg": True},
    ]
    code = cli.main(["check", str(write_config(project, data))])
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("error")]
    assert code == 1
    cache = only(lines, "dataset.cache_text_encoder_outputs")
    assert "shuffle_caption is on: the captions of the images of '10_ohwx shape' change" in cache, cache
    dropout = only(lines, "dataset.caption_dropout_rate")
    assert "trains the images of '10_ohwx shape' with an empty caption at every step" in dropout, dropout


def test_keep_tokens_above_a_captions_tags_is_a_warning_naming_an_example(project, capsys):
    code, lines = check_lines(project, capsys, dataset={"shuffle_caption": True, "keep_tokens": 4})
    line = only(lines, "dataset.keep_tokens")
    assert code == 0 and line.startswith("warning")
    assert "keeps every tag of 8 captions in place" in line and "shape_0" in line and "has 3 tags" in line


def test_max_token_length_is_75_150_or_225(project, capsys):
    for bad, says in ((100, "is not a multiple of 75 (fix: use 75)"), (300, "(fix: use 75, 150 or 225)")):
        code, lines = check_lines(project, capsys, dataset={"max_token_length": bad})
        line = only(lines, "dataset.max_token_length")
        assert code == 1 and line.startswith("error") and says in line, line
    code, lines = check_lines(project, capsys, dataset={"max_token_length": 225})
    assert code == 0, lines


def test_flux_ignores_max_token_length_with_a_warning():
    from loratui.caption_rules import _token_length_for_flux
    from loratui.config import RunConfig

    cfg = RunConfig()
    cfg.model.family, cfg.dataset.max_token_length = "flux", 225
    (problem,) = _token_length_for_flux(cfg)
    assert problem.severity == "warning" and "not used by FLUX.1" in problem.message
    cfg.model.family = "sd1"
    assert _token_length_for_flux(cfg) == []
