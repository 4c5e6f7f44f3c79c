"""twotower.recipes — the command lines: each recipe parses its flags and composes
library parts (word2vec, item2vec, dssm, youtube, mns, ebr, airbnb, eges, demo, convert,
serve; ``twotower <recipe> --help``). Shared flags are declared once: two_tower_settings,
word2vec_flags, session_flags, vector_export."""
