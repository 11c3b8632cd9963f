"""Click command of the text stage: `embed-text`."""

from __future__ import annotations

import click

from ..cli_options import (device_option, manifest_option, precision_option, shard_options,
                           stage_options)
from ..stage_summary import fail_if_none_done, report


def _percent(part: float) -> str:
    return f"{100 * part:.1f}%"


@click.command("embed-text")
@manifest_option()
@click.option("--mode", type=click.Choice(["static", "ids", "features"]), default="static",
              help="static: vocabulary ids + an embedding matrix from word vectors. ids: a "
                   "transformer's input ids and attention mask. features: frozen transformer "
                   "hidden states per token (float16).")
@click.option("--vectors", default=None,
              help="static: a GloVe .txt, word2vec/fastText .vec (optionally .gz), fastText "
                   ".bin, a .npy matrix with its word list (file or folder), or "
                   "'glove-6b-50d-package'.")
@click.option("--vectors-cache", type=click.Path(file_okay=False), default=None,
              envvar="MRHP_VECTORS_CACHE", show_envvar=True,
              help="Where text vector files are converted once for fast loading "
                   "[default: CACHE_DIR/vectors].")
@click.option("--language", type=click.Choice(["auto", "en", "id"]), default="auto",
              help="static: spaCy rule-based tokenizer; auto = id for Lazada, en otherwise.")
@click.option("--lowercase/--no-lowercase", default=True,
              help="static: lower-case tokens (offsets still point at the original text).")
@click.option("--max-length", type=click.IntRange(min=1), default=128,
              help="Keep the first N tokens of each text (transformers: special tokens "
                   "included).")
@click.option("--min-freq", type=click.IntRange(min=1), default=5,
              help="static: keep tokens seen at least this often in the train split.")
@click.option("--shared-vocab", is_flag=True, default=False,
              help="static: one vocabulary fitted on product and review text together "
                   "(written under both names).")
@click.option("--seed", type=int, default=0,
              help="static: seed of the uniform init of words the vectors lack.")
@click.option("--model", default=None,
              help="ids/features: a local model folder (or a hub name when online).")
@click.option("--layers", default="-1",
              help="features: hidden state(s) to keep, e.g. -1 (last) or -4,-3,-2,-1 (their "
                   "mean); 0 is the embedding output.")
@precision_option(prefix="features: ")
@device_option(prefix="features: ")
@click.option("--batch-size", type=click.IntRange(min=1), default=32,
              help="features: texts per forward pass (batches are sorted by length).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="static: tokenizer processes (the output is the same for any number) "
                   "[default: the cores this process may use].")
@click.option("--rows-per-shard", type=click.IntRange(min=1), default=5000,
              help="Rows per Arrow shard file (the last one may be shorter).")
@shard_options
@stage_options
def embed_text(manifest, mode, vectors, vectors_cache, language, lowercase, max_length,
               min_freq, shared_vocab, seed, model, layers, precision, device, batch_size,
               workers, rows_per_shard, num_shards, shard_index, out, cache_dir, force):
    """Tokenize and embed product and review text into Arrow shards.

    Every token keeps its character offsets into the manifest's text. Output:
    product-NNNNN.arrow and review-NNNNN.arrow (+ vocab-*.txt and vectors-*.npy in
    static mode).

    Examples:

      mrhp-prep embed-text --manifest M --vectors glove.840B.300d.txt

      mrhp-prep embed-text --manifest M --mode features --model ./bert-base-uncased
    """
    from .embed import embed_text as run_stage

    run = run_stage(manifest, mode=mode, language=language, lowercase=lowercase,
                    max_length=max_length, min_freq=min_freq, shared_vocab=shared_vocab,
                    vectors=vectors, vectors_cache=vectors_cache, seed=seed, model=model,
                    layers=layers, batch_size=batch_size, device=device, precision=precision,
                    rows_per_shard=rows_per_shard, num_shards=num_shards,
                    shard_index=shard_index, out=out, cache_dir=cache_dir, force=force,
                    workers=workers)
    info = run.manifest()
    rows = {"mode": info["mode"], "tokenizer": info["tokenizer"]["name"]}
    if info.get("dim"):
        rows["dim"] = info["dim"]
    if info["mode"] == "static":
        rows["vectors"] = (f"{info['vector_source']['label']} "
                           f"(loaded in {info['vectors_load_seconds']} s, "
                           f"cache {info['vectors_info'].get('cache', 'none')})")
    for name, field in info["fields"].items():
        line = (f"{field['rows']} rows, {field['tokens']} tokens, {field['shards']} shard(s); "
                f"empty {field['empty_texts']}, cleaned {field['cleaned_texts']}, "
                f"truncated {field['truncated_texts']}")
        if info["mode"] == "static":
            line += "; " + _vocabulary_line(info["vocab_sizes"][name], info["coverage"][name],
                                            field)
        rows[name] = line
    rows["failures"] = f"{info['num_failures']} (see failures.jsonl)"
    report("embed-text finished", rows, run.path)
    fail_if_none_done(sum(f["rows"] for f in info["fields"].values()), info["counts"]["items"],
                      "texts", run.path)
    return str(run.path)


def _vocabulary_line(vocab_size: int, cov: dict, field: dict) -> str:
    """What the vocabulary keeps of the train tokens, what the vectors cover, and how many of
    all tokens are <unk> (folders of older versions lack the train-type counts)."""
    kept = f"vocab {vocab_size}"
    if "train_types" in cov:    # words, the two specials (<pad>, <unk>) not counted
        kept = (f"vocab {cov['types']} of {cov['train_types']} train types, holding "
                 f"{_percent(cov['vocab_token_coverage'])} of the train tokens")
    tokens = "the train tokens" if "train_types" in cov else "its train tokens"
    vectors = (f"in vectors {_percent(cov['type_coverage'])} of its types / "
               f"{_percent(cov['token_coverage'])} of {tokens}"
               + (f", {cov['types_subword']} from subwords" if cov["types_subword"] else ""))
    unk = (f"<unk> {field['unk_tokens']} of {field['tokens']} tokens "
           f"({_percent(field['unk_tokens'] / field['tokens'] if field['tokens'] else 0.0)})")
    return f"{kept}; {vectors}; {unk}"


@click.command("merge-text")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@stage_options
def merge_text(folders, out, cache_dir, force):
    """Join the output FOLDERS of an embed-text job array into one folder (links, no copies).

    Example: mrhp-prep merge-text cache/amazon-home/embed-text/*/
    """
    from .merge import merge_text as run_merge

    run = run_merge(list(folders), out=out, cache_dir=cache_dir, force=force)
    info = run.manifest()
    rows = {f"{field}": f"{values['rows']} rows in {values['shards']} shard(s)"
            for field, values in info["fields"].items()}
    rows["jobs"] = len(info["merged"])
    report("merge-text finished", rows, run.path)
    return str(run.path)
