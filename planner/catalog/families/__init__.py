"""Model families: one module per VLM family (or close group), holding both halves of what the planner knows of it.

A family module reads its Hugging Face ``config.json`` into the decoder and vision parts of a ModelSpec *and*
counts the tokens one image costs under its processor, so a family's config keys and its token rule, which
change together when a new checkpoint ships, sit in one file. ``registry`` maps ``model_type`` values and
visual-token rule names to the families; ``text`` reads the language model shared by all of them, ``vit`` the
plain ViT towers several of them share, ``reader`` the typed config look-ups and ``tokens`` the token-rule
parameters. The public entry points stay ``planner.catalog.hf_import`` and ``planner.catalog.vision_tokens``.
"""
