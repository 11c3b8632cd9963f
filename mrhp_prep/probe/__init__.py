"""Probe masks: which sentences of a review mention the product (SANCL's Algorithm 1).

Modules: `core_words` (the product name's core words), `coref` (coreference backends by
name), `masks` (the `paper` and `sancl-code` rules), `indonesian` (the Lazada language
support), `language` (loading a spaCy pipeline), `builder` (documents to mask rows),
`stage` (the cached, sharded, resumable stage) and `commands` (the CLI).
"""
