"""Text: tokenizers with character offsets, vocabularies, static vectors with a fast cache,
transformer encoders, the Arrow shard writer and the `embed-text` stage."""
