"""twotower.data — vocabularies, samplers, frequency estimation, corpora and datasets."""
